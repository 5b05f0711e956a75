// Package durable writes files so that a crash or power cut leaves either
// the old content or the new, never a torn file: write a temporary, fsync
// it, rename it over, fsync the directory. Patient images and the indexes
// that name them go through here.
package durable

import (
	"io"
	"os"
	"path/filepath"
)

// WriteFile writes b to path durably with mode.
func WriteFile(path string, b []byte, mode os.FileMode) error {
	return Write(path, mode, func(w io.Writer) error {
		_, err := w.Write(b)
		return err
	})
}

// Write is WriteFile for content written by fill: the file appears whole
// or not at all.
func Write(path string, mode os.FileMode, fill func(io.Writer) error) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	defer os.Remove(tmp) // after a failure; a no-op once renamed
	if err := fill(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return SyncDir(filepath.Dir(path))
}

// AppendLine appends one line to an index file, durably: what a crash
// leaves is whole lines and at most a torn last one, which readers skip.
func AppendLine(path string, line []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, mode)
	if err != nil {
		return err
	}
	_, err = f.Write(append(line, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// SyncDir makes a directory's entries (a rename, a new file) durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
