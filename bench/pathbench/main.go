// Command pathbench is the part of `make bench` (scripts/bench.sh) that
// compares sallyport's two paths with wireguard-go on a clean and on a
// lossy link. It runs inside the bench's network namespaces:
//
//	pathbench wgkey                      print a WireGuard key pair (hex): private=... public=...
//	pathbench wg FLAGS                   run a wireguard-go peer (golang.zx2c4.com/wireguard,
//	                                     its device and tun packages) until SIGTERM
//	pathbench loss -iface IF -percent P  drop P% of the packets arriving on IF at random
//	                                     (an nftables table of its own: numgen random;
//	                                     this kernel has no netem); -percent 0 removes it
//
// Nothing here leaves the namespace it runs in.
package main

import (
	"crypto/ecdh"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/sallyport/sallyport/tunnel"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: pathbench wgkey | wg FLAGS | loss -iface IF -percent P")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "wgkey":
		err = wgKey()
	case "wg":
		err = runWG(os.Args[2:])
	case "loss":
		err = loss(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "pathbench:", err)
		os.Exit(1)
	}
}

// wgKey prints a Curve25519 key pair in the hex form of WireGuard's UAPI.
func wgKey() error {
	k, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	fmt.Printf("private=%s public=%s\n", hex.EncodeToString(k.Bytes()), hex.EncodeToString(k.PublicKey().Bytes()))
	return nil
}

// runWG runs one wireguard-go peer: a TUN named -iface with -addr, one
// peer, until SIGTERM or SIGINT.
func runWG(args []string) error {
	fs := flag.NewFlagSet("wg", flag.ContinueOnError)
	iface := fs.String("iface", "wg0", "TUN interface name")
	addr := fs.String("addr", "", "interface address, CIDR")
	mtu := fs.Int("mtu", 1420, "interface MTU (wg-quick's default)")
	port := fs.Int("listen-port", 51820, "UDP port")
	priv := fs.String("private", "", "own private key, hex")
	peer := fs.String("peer", "", "peer's public key, hex")
	endpoint := fs.String("endpoint", "", "peer's ip:port (empty: learned from its packets)")
	allowed := fs.String("allowed-ips", "", "comma-separated CIDRs routed to the peer")
	if err := fs.Parse(args); err != nil {
		return err
	}
	pfx, err := netip.ParsePrefix(*addr)
	if err != nil {
		return fmt.Errorf("-addr: %w", err)
	}
	dev, err := tun.CreateTUN(*iface, *mtu)
	if err != nil {
		return fmt.Errorf("create TUN %s: %w", *iface, err)
	}
	wg := device.NewDevice(dev, conn.NewDefaultBind(), device.NewLogger(device.LogLevelError, "wg: "))
	defer wg.Close()
	var uapi strings.Builder
	fmt.Fprintf(&uapi, "private_key=%s\nlisten_port=%d\npublic_key=%s\n", *priv, *port, *peer)
	if *endpoint != "" {
		fmt.Fprintf(&uapi, "endpoint=%s\n", *endpoint)
	}
	for _, a := range strings.Split(*allowed, ",") {
		if a = strings.TrimSpace(a); a != "" {
			fmt.Fprintf(&uapi, "allowed_ip=%s\n", a)
		}
	}
	if err := wg.IpcSet(uapi.String()); err != nil {
		return fmt.Errorf("configure: %w", err)
	}
	if err := wg.Up(); err != nil {
		return err
	}
	name, err := dev.Name()
	if err != nil {
		return err
	}
	if err := tunnel.SetAddress(name, pfx); err != nil {
		return err
	}
	if err := tunnel.LinkUp(name, *mtu); err != nil {
		return err
	}
	fmt.Println("ready")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-sig:
	case <-wg.Wait():
	}
	return nil
}

const lossTable = "spbench-loss"

// loss installs (or with -percent 0 removes) random drop of packets
// arriving on -iface, in this network namespace. On arrival, as a lossy
// link loses them: a packet dropped on its way out makes the sender's
// sendmsg fail with EPERM, which no real link does (and quic-go closes the
// connection on a failed send).
func loss(args []string) error {
	fs := flag.NewFlagSet("loss", flag.ContinueOnError)
	iface := fs.String("iface", "", "interface the packets arrive on")
	percent := fs.Int("percent", 1, "packets dropped, in percent (0 removes the rule)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *iface == "" || *percent < 0 || *percent > 100 {
		return errors.New("need -iface and 0 <= -percent <= 100")
	}
	c, err := nftables.New()
	if err != nil {
		return err
	}
	tb := &nftables.Table{Family: nftables.TableFamilyINet, Name: lossTable}
	c.DelTable(tb)
	_ = c.Flush() // absent is fine
	if *percent == 0 {
		return nil
	}
	c.AddTable(tb)
	ch := c.AddChain(&nftables.Chain{Name: "out", Table: tb, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityFilter})
	name := make([]byte, unix.IFNAMSIZ)
	copy(name, *iface)
	c.AddRule(&nftables.Rule{Table: tb, Chain: ch, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: name},
		&expr.Numgen{Register: 1, Modulus: 100, Type: unix.NFT_NG_RANDOM},
		&expr.Cmp{Op: expr.CmpOpLt, Register: 1, Data: binaryutil.NativeEndian.PutUint32(uint32(*percent))},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}})
	return c.Flush()
}
