package pidfile

import "os"

// Claim opens the pidfile in dir and locks it. The caller holds the data
// directory until it closes the returned File; the previous holder's record
// is then available from ReadRecord.
func Claim(dir string, opts Options) (*File, error) {
	f, err := Open(dir, opts)
	if err != nil {
		return nil, err
	}
	if err := f.TryLock(opts.Method); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// Unlock releases the lock but keeps the file open: for everyone sharing
// the open file description, children included. Tests only: the interlock
// never takes the lock from a holder's children (docs/design.md).
func (f *File) Unlock() error {
	if !f.locked {
		return nil
	}
	f.unregister()
	f.locked = false
	if err := remove(f.f.Fd(), f.method); err != nil {
		return &os.PathError{Op: "unlock", Path: f.path, Err: err}
	}
	return nil
}
