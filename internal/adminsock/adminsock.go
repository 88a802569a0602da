// Package adminsock is the local control channel of a running sallyport
// process: a unix socket (mode 0600, directory 0700 when it makes it; never
// in a directory anyone may write: dir.go) that answers one JSON request
// per connection. The server uses it for `server status`, `kick`,
// `reload` and `pprof`, the client for `status` and `down`.
package adminsock

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// Request is what a command-line tool sends.
type Request struct {
	Cmd    string `json:"cmd"`
	Device string `json:"device,omitempty"`
	// Kind and Seconds parameterise `pprof`: the profile and, for a CPU
	// profile, how long to record.
	Kind    string `json:"kind,omitempty"`
	Seconds int    `json:"seconds,omitempty"`
}

// Response carries either Data or Error.
type Response struct {
	OK    bool            `json:"ok"`
	Error string          `json:"error,omitempty"`
	Data  json.RawMessage `json:"data,omitempty"`
}

// Handler answers one request; the returned value is encoded as Data.
type Handler func(ctx context.Context, req Request) (any, error)

// maxRequest bounds what a peer may send; requests are tiny.
const maxRequest = 4096

// ioTimeout bounds reading a request and, separately, writing its reply, so
// a stuck peer cannot hold a connection; the handler in between may take
// longer (a CPU profile records for seconds). A variable for tests.
var ioTimeout = 5 * time.Second

// callTimeout is Call's deadline for the whole exchange.
const callTimeout = 10 * time.Second

// Server listens on a unix socket until Close.
type Server struct {
	ln      net.Listener
	path    string
	handler Handler
	log     *slog.Logger
	wg      sync.WaitGroup
	once    sync.Once
	ctx     context.Context
	cancel  context.CancelFunc
	opts    Options
}

// Listen creates the socket at path (replacing a stale one left by a crashed
// process, but refusing to steal one that still answers) and serves h.
func Listen(path string, h Handler, log *slog.Logger) (*Server, error) {
	return ListenOptions(path, Options{}, h, log)
}

// ListenOptions is Listen with the group access of opts (group.go).
func ListenOptions(path string, opts Options, h Handler, log *slog.Logger) (*Server, error) {
	gid := -1
	if opts.Group != "" {
		var err error
		if gid, err = LookupGroup(opts.Group); err != nil {
			return nil, err
		}
	}
	own, err := prepareSocketDir(path)
	var unsafe *UnsafeDirError
	if errors.As(err, &unsafe) {
		return nil, unsafe
	}
	if err != nil {
		return nil, dirError(path, err)
	}
	if c, err := net.DialTimeout("unix", path, 200*time.Millisecond); err == nil {
		c.Close()
		return nil, fmt.Errorf("admin socket %s: another sallyport process is listening there", path)
	}
	_ = os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, dirError(path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin socket %s: %w", path, err)
	}
	if gid >= 0 {
		if err := share(path, gid, own, log); err != nil {
			ln.Close()
			return nil, err
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{ln: ln, path: path, handler: h, log: log, ctx: ctx, cancel: cancel, opts: opts}
	s.wg.Add(1)
	go s.acceptLoop()
	return s, nil
}

// DirError is an admin socket that could not be made because its
// directory may not be created (Mkdir) or written by this user. Its
// message says so and how to fix it (not a hint about TCP ports or
// capabilities).
type DirError struct {
	Socket, Dir string
	Mkdir       bool
	UID         int
	Err         error
}

func (e *DirError) Error() string {
	what := fmt.Sprintf("directory %s is not writable by uid %d", e.Dir, e.UID)
	if e.Mkdir {
		what = fmt.Sprintf("uid %d may not create directory %s", e.UID, e.Dir)
	}
	return fmt.Sprintf("admin socket %s: %s (%v): run as root (sudo), or set [admin] socket to a path in a directory this user may write",
		e.Socket, what, e.Err)
}

func (e *DirError) Unwrap() error { return e.Err }

// dirError wraps err from creating the socket at path: a permission error
// becomes a DirError naming the directory.
func dirError(path string, err error) error {
	if errors.Is(err, os.ErrPermission) {
		// The innermost cause (EACCES) reads best after the directory.
		var errno syscall.Errno
		cause := err
		if errors.As(err, &errno) {
			cause = errno
		}
		var pe *fs.PathError
		return &DirError{Socket: path, Dir: filepath.Dir(path), Mkdir: errors.As(err, &pe) && pe.Op == "mkdir", UID: os.Geteuid(), Err: cause}
	}
	return fmt.Errorf("admin socket %s: %w", path, err)
}

func (s *Server) acceptLoop() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serve(c)
		}()
	}
}

func (s *Server) serve(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(ioTimeout))
	var req Request
	var resp Response
	if err := json.NewDecoder(io.LimitReader(c, maxRequest)).Decode(&req); err != nil {
		resp.Error = "bad request: " + err.Error()
	} else if err := s.opts.allowed(peerOf(c), req.Cmd); err != nil {
		resp.Error = err.Error()
	} else if v, err := s.handler(s.ctx, req); err != nil {
		resp.Error = err.Error()
	} else {
		data, err := json.Marshal(v)
		if err != nil {
			resp.Error = err.Error()
		} else {
			resp.OK, resp.Data = true, data
		}
	}
	_ = c.SetDeadline(time.Now().Add(ioTimeout))
	if err := json.NewEncoder(c).Encode(resp); err != nil && s.log != nil {
		s.log.Debug("admin reply failed", "err", err)
	}
}

// Close stops listening, waits for requests in flight and removes the
// socket file. It is safe to call more than once.
func (s *Server) Close() error {
	s.once.Do(func() {
		s.cancel()
		s.ln.Close()
		s.wg.Wait()
		_ = os.Remove(s.path)
	})
	return nil
}

// Call sends req to the socket at path and decodes the reply's data into out
// (which may be nil).
func Call(path string, req Request, out any) error {
	return CallTimeout(path, req, out, callTimeout)
}

// CallTimeout is Call with a deadline of d for the whole exchange, for
// requests the process takes long to answer.
func CallTimeout(path string, req Request, out any, d time.Duration) error {
	c, err := net.DialTimeout("unix", path, 2*time.Second)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("admin socket %s does not exist: is sallyport running? (%w)", path, err)
		}
		if errors.Is(err, os.ErrPermission) {
			return fmt.Errorf("admin socket %s: %w (run it with sudo, or as a member of the config's [admin] group)", path, os.ErrPermission)
		}
		return fmt.Errorf("admin socket %s: %w", path, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(d))
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return fmt.Errorf("admin socket %s: send: %w", path, err)
	}
	var resp Response
	if err := json.NewDecoder(io.LimitReader(c, 16<<20)).Decode(&resp); err != nil {
		return fmt.Errorf("admin socket %s: read reply: %w", path, err)
	}
	if !resp.OK {
		return errors.New(resp.Error)
	}
	if out != nil && len(resp.Data) > 0 {
		if err := json.Unmarshal(resp.Data, out); err != nil {
			return fmt.Errorf("admin socket %s: decode reply: %w", path, err)
		}
	}
	return nil
}
