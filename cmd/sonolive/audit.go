package main

import (
	"errors"
	"flag"
	"fmt"

	"sonolive/audit"
)

// auditCmd is `sonolive audit verify FILE`.
func auditCmd(args []string) error {
	fs := flag.NewFlagSet("audit", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage: sonolive audit verify FILE

Checks the hash chain of serve's access log (audit.path, default audit.jsonl):
every line must carry the hash of the one before it. Prints the number of
entries and the head hash, or names the first line that was removed, moved or
edited (exit 1). Compare the head with the one serve logged at its last stop
to catch lines removed from the end.
`)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() != 2 || fs.Arg(0) != "verify" {
		fs.Usage()
		return errors.New("audit: want 'verify FILE'")
	}
	n, head, err := audit.Verify(fs.Arg(1))
	if err != nil {
		return fmt.Errorf("audit %s: %w (%d entries verified before it)", fs.Arg(1), err, n)
	}
	fmt.Printf("ok: %d entries, head %s\n", n, head)
	return nil
}
