package ca

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The index is a bbolt database, D/index.db. bbolt (a B+tree in one file,
// copy-on-write pages, one fsynced meta page per commit) makes issuing and
// revoking O(log n) and each change one atomic transaction: a crash leaves
// either the state before or after it, never a torn file. The index.json an
// older release kept, rewritten whole on every issue (minutes for 10,000
// devices), is imported on first use and renamed index.json.migrated.
//
// Buckets:
//
//	certs    seq (8 bytes, big endian; issue order) -> Record as JSON
//	serials  serial (canonical hex)                  -> seq
//	names    kind NUL name NUL seq                   -> "" (every record of a name)
//	revoked  seq                                     -> "" (revoked records)
//	meta     "version" -> "1", "crl_number" -> decimal number of the last CRL
const (
	indexDB       = "index.db"
	legacyIndex   = "index.json"
	migratedIndex = "index.json.migrated"
	storeVersion  = "1"
)

var (
	bktCerts   = []byte("certs")
	bktSerials = []byte("serials")
	bktNames   = []byte("names")
	bktRevoked = []byte("revoked")
	bktMeta    = []byte("meta")
	keyVersion = []byte("version")
	keyCRLNum  = []byte("crl_number")
)

// storeLockTimeout bounds the wait for bbolt's own file lock. The PKI's
// .lock already serialises writers, so this only trips when something
// outside this package holds index.db open.
const storeLockTimeout = 30 * time.Second

// storeMmap is the initial size of bbolt's memory map. When the file
// outgrows the map, bbolt remaps it and first copies out every node the
// transaction holds; with the default map (the file size rounded up) that
// happened on most commits of a growing index and cost 1 ms per issue at
// 10,000 devices against 0.2 ms at 1,000. 64 MiB of address space (not
// memory) holds the index of well over 50,000 devices.
const storeMmap = 64 << 20

// storeAllocSize is the step in which the index file grows.
const storeAllocSize = 1 << 20

// store is an open index database.
type store struct {
	db *bolt.DB
}

// openStore opens (creating when create is set) the index in dir. A legacy
// index.json is migrated first; that needs write access, so callers hold the
// PKI's exclusive lock whenever migration may be needed (see needsMigration).
func openStore(dir string, create, readOnly bool) (*store, error) {
	path := dir + string(os.PathSeparator) + indexDB
	if !create {
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("open index: %w", err)
		}
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: storeLockTimeout, ReadOnly: readOnly, FreelistType: bolt.FreelistMapType, InitialMmapSize: storeMmap})
	if err != nil {
		return nil, fmt.Errorf("open index %s: %w", path, err)
	}
	// With the large map bbolt would grow the file in 16 MiB steps; the
	// index of 10,000 devices is about 6 MiB.
	db.AllocSize = storeAllocSize
	s := &store{db: db}
	if readOnly {
		err = db.View(func(tx *bolt.Tx) error { return checkVersion(tx, path) })
	} else {
		err = db.Update(func(tx *bolt.Tx) error {
			// Only a database with nothing in it is new; one with other
			// buckets and no meta is not ours, and is left alone.
			if k, _ := tx.Cursor().First(); k == nil {
				return initBuckets(tx)
			}
			return checkVersion(tx, path)
		})
	}
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open index %s: %w", path, err)
	}
	return s, nil
}

// initBuckets makes the buckets of an empty index.
func initBuckets(tx *bolt.Tx) error {
	for _, b := range [][]byte{bktCerts, bktSerials, bktNames, bktRevoked, bktMeta} {
		if _, err := tx.CreateBucket(b); err != nil {
			return err
		}
	}
	return tx.Bucket(bktMeta).Put(keyVersion, []byte(storeVersion))
}

func checkVersion(tx *bolt.Tx, path string) error {
	m := tx.Bucket(bktMeta)
	if m == nil {
		return fmt.Errorf("%s is not a sallyport index (no meta bucket)", path)
	}
	if v := string(m.Get(keyVersion)); v != storeVersion {
		return fmt.Errorf("unsupported index version %q", v)
	}
	return nil
}

func (s *store) Close() error { return s.db.Close() }

// needsMigration reports whether dir holds a legacy index.json and no
// index.db yet.
func needsMigration(dir string) bool {
	_, errDB := os.Stat(dir + string(os.PathSeparator) + indexDB)
	_, errJSON := os.Stat(dir + string(os.PathSeparator) + legacyIndex)
	return errors.Is(errDB, fs.ErrNotExist) && errJSON == nil
}

// migrate imports a legacy index.json into a new index.db, atomically: the
// database is built under a temporary name and renamed into place, then
// index.json is renamed index.json.migrated. A crash before the rename
// leaves index.json in charge (and the next run starts over); after it, the
// database is. The caller holds the PKI's exclusive lock.
func migrate(dir string) error {
	sep := string(os.PathSeparator)
	ix, err := readLegacyIndex(dir + sep + legacyIndex)
	if err != nil {
		return fmt.Errorf("migrate %s: %w", legacyIndex, err)
	}
	tmp := dir + sep + "." + indexDB + ".migrating"
	_ = os.Remove(tmp) // left by a crashed migration
	db, err := bolt.Open(tmp, 0o600, &bolt.Options{Timeout: storeLockTimeout, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return fmt.Errorf("migrate %s: %w", legacyIndex, err)
	}
	ms := &store{db: db}
	err = db.Update(func(tx *bolt.Tx) error {
		if err := initBuckets(tx); err != nil {
			return err
		}
		if err := tx.Bucket(bktMeta).Put(keyCRLNum, []byte(strconv.FormatInt(ix.CRLNumber, 10))); err != nil {
			return err
		}
		for i := range ix.Certs {
			if err := putNew(tx, &ix.Certs[i]); err != nil {
				return err
			}
		}
		return nil
	})
	if cerr := ms.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("migrate %s: %w", legacyIndex, err)
	}
	if err := syncRename(dir, tmp, dir+sep+indexDB); err != nil {
		return fmt.Errorf("migrate %s: %w", legacyIndex, err)
	}
	if err := syncRename(dir, dir+sep+legacyIndex, dir+sep+migratedIndex); err != nil {
		return fmt.Errorf("migrate %s: database written, but %w", legacyIndex, err)
	}
	return nil
}

func syncRename(dir, from, to string) error {
	if err := os.Rename(from, to); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

func seqKey(seq uint64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], seq)
	return k[:]
}

func nameKey(kind, name string, seq []byte) []byte {
	k := make([]byte, 0, len(kind)+len(name)+2+len(seq))
	k = append(append(append(append(k, kind...), 0), name...), 0)
	return append(k, seq...)
}

// putNew appends r as the newest record. A serial already present is an
// error (the transaction is rolled back).
func putNew(tx *bolt.Tx, r *Record) error {
	serials := tx.Bucket(bktSerials)
	if serials.Get([]byte(r.Serial)) != nil {
		return fmt.Errorf("serial %s is already in the index", r.Serial)
	}
	certs := tx.Bucket(bktCerts)
	seq, err := certs.NextSequence()
	if err != nil {
		return err
	}
	k := seqKey(seq)
	if err := putRecord(tx, k, r); err != nil {
		return err
	}
	if err := serials.Put([]byte(r.Serial), k); err != nil {
		return err
	}
	return tx.Bucket(bktNames).Put(nameKey(r.Kind, r.Name, k), nil)
}

// putRecord stores r under k and keeps the revoked bucket in step.
func putRecord(tx *bolt.Tx, k []byte, r *Record) error {
	data, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode record %s: %w", r.Serial, err)
	}
	if err := tx.Bucket(bktCerts).Put(k, data); err != nil {
		return err
	}
	if r.Revoked() {
		return tx.Bucket(bktRevoked).Put(k, nil)
	}
	return nil
}

func getRecord(tx *bolt.Tx, k []byte) (*Record, error) {
	data := tx.Bucket(bktCerts).Get(k)
	if data == nil {
		return nil, fmt.Errorf("index: record %x missing", k)
	}
	var r Record
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("index: record %x: %w", k, err)
	}
	return &r, nil
}

// add records newly issued certificates, in order, in one transaction.
func (s *store) add(rs ...*Record) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		for _, r := range rs {
			if err := putNew(tx, r); err != nil {
				return err
			}
		}
		return nil
	})
}

// hasSerial reports whether serial is in the index.
func (s *store) hasSerial(serial string) (bool, error) {
	var ok bool
	err := s.db.View(func(tx *bolt.Tx) error {
		ok = tx.Bucket(bktSerials).Get([]byte(serial)) != nil
		return nil
	})
	return ok, err
}

// bySerial returns the record of serial, or nil when there is none.
func (s *store) bySerial(serial string) (*Record, error) {
	var r *Record
	err := s.db.View(func(tx *bolt.Tx) error {
		k := tx.Bucket(bktSerials).Get([]byte(serial))
		if k == nil {
			return nil
		}
		var err error
		r, err = getRecord(tx, k)
		return err
	})
	return r, err
}

// byName returns every record of kind and name, in issue order.
func (s *store) byName(kind, name string) ([]Record, error) {
	var out []Record
	prefix := nameKey(kind, name, nil)
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bktNames).Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			r, err := getRecord(tx, k[len(prefix):])
			if err != nil {
				return err
			}
			out = append(out, *r)
		}
		return nil
	})
	return out, err
}

// all returns every record in issue order.
func (s *store) all() ([]Record, error) {
	var out []Record
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bktCerts).ForEach(func(k, v []byte) error {
			var r Record
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("index: record %x: %w", k, err)
			}
			out = append(out, r)
			return nil
		})
	})
	return out, err
}

// revokedRecords returns the revoked records in issue order.
func (s *store) revokedRecords() ([]Record, error) {
	var out []Record
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bktRevoked).ForEach(func(k, _ []byte) error {
			r, err := getRecord(tx, k)
			if err != nil {
				return err
			}
			out = append(out, *r)
			return nil
		})
	})
	return out, err
}

// revoke marks the records of serials revoked at t for reason, in one
// transaction. Records already revoked are left as they are.
func (s *store) revoke(serials []string, t time.Time, reason string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		for _, serial := range serials {
			k := tx.Bucket(bktSerials).Get([]byte(serial))
			if k == nil {
				return fmt.Errorf("serial %s is not in the index", serial)
			}
			k = bytes.Clone(k)
			r, err := getRecord(tx, k)
			if err != nil {
				return err
			}
			if r.Revoked() {
				continue
			}
			r.RevokedAt, r.Reason = t, reason
			if err := putRecord(tx, k, r); err != nil {
				return err
			}
		}
		return nil
	})
}

// crlNumber is the number of the last CRL written (0 before the first).
func (s *store) crlNumber() (int64, error) {
	var n int64
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bktMeta).Get(keyCRLNum)
		if v == nil {
			return nil
		}
		var err error
		n, err = strconv.ParseInt(string(v), 10, 64)
		if err != nil {
			return fmt.Errorf("index: crl_number %q: %w", v, err)
		}
		return nil
	})
	return n, err
}

func (s *store) setCRLNumber(n int64) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bktMeta).Put(keyCRLNum, []byte(strconv.FormatInt(n, 10)))
	})
}
