package testnet

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Link is what one direction of a Wire does to packets: a bottleneck of
// RateBPS with a drop-tail queue of QueueBytes, then Delay, and Loss (a
// fraction) dropped at random — what tc netem's delay/loss/rate do. The
// kernels these tests run on (and CI's) have no netem qdisc, so a Wire
// does it in user space, between two TUN devices.
type Link struct {
	Delay      time.Duration
	Loss       float64
	RateBPS    int
	QueueBytes int // default 64 KiB
}

// Wire is a network namespace joined to this one through an impaired
// link: HostIP here, NSIP in the namespace, one /24. Packets both ways go
// through this process, which applies Down (to the namespace) and Up.
type Wire struct {
	NS             string
	HostIP, NSIP   string
	down, up       *pipe
	hostTun, nsTun *os.File
}

// WireStats count a direction's packets: passed, lost at random, dropped
// at the full queue.
type WireStats struct {
	Passed, Lost, Dropped uint64
}

// NewWire makes namespace ns (replacing one left over) on subnet
// 10.N.0.0/24 and starts the link; it is removed when the test ends. It
// needs root, ip(8) and /dev/net/tun.
func NewWire(t testing.TB, ns string, subnet int, down, up Link) *Wire {
	t.Helper()
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	exec.Command("ip", "netns", "del", ns).Run()
	ip("netns", "add", ns)
	w := &Wire{NS: ns, HostIP: fmt.Sprintf("10.%d.0.1", subnet), NSIP: fmt.Sprintf("10.%d.0.2", subnet)}
	hostName, nsName := ns+"-h", ns+"-n"
	var err error
	if w.hostTun, err = openTun(hostName); err != nil {
		t.Fatalf("tun %s: %v", hostName, err)
	}
	if w.nsTun, err = openTun(nsName); err != nil {
		w.hostTun.Close()
		t.Fatalf("tun %s: %v", nsName, err)
	}
	// The device moves; the file stays attached to it.
	ip("link", "set", nsName, "netns", ns)
	ip("addr", "add", w.HostIP+"/24", "dev", hostName)
	ip("link", "set", hostName, "up")
	ip("-n", ns, "addr", "add", w.NSIP+"/24", "dev", nsName)
	ip("-n", ns, "link", "set", nsName, "up")
	ip("-n", ns, "link", "set", "lo", "up")
	w.down = newPipe(w.hostTun, w.nsTun, down)
	w.up = newPipe(w.nsTun, w.hostTun, up)
	t.Cleanup(func() {
		w.hostTun.Close()
		w.nsTun.Close()
		w.down.wait()
		w.up.wait()
		exec.Command("ip", "netns", "del", ns).Run()
	})
	return w
}

// Stats are the counts of the link to the namespace and from it.
func (w *Wire) Stats() (down, up WireStats) { return w.down.stats(), w.up.stats() }

// openTun creates a TUN device (no packet information header).
func openTun(name string) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	var req [unix.IFNAMSIZ + 64]byte
	copy(req[:], name)
	*(*uint16)(unsafe.Pointer(&req[unix.IFNAMSIZ])) = unix.IFF_TUN | unix.IFF_NO_PI
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TUNSETIFF, uintptr(unsafe.Pointer(&req[0]))); errno != 0 {
		unix.Close(fd)
		return nil, errno
	}
	// Non-blocking, so the runtime's poller serves it and Close ends a
	// Read in progress.
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), name), nil
}

// pipe carries one direction: a reader that polices the rate and the
// queue, and a writer that releases each packet at its time.
type pipe struct {
	link                  Link
	q                     chan timed
	done                  sync.WaitGroup
	passed, lost, dropped atomic.Uint64
}

type timed struct {
	pkt []byte
	at  time.Time
}

func newPipe(from, to *os.File, l Link) *pipe {
	if l.QueueBytes <= 0 {
		l.QueueBytes = 64 << 10
	}
	p := &pipe{link: l, q: make(chan timed, 8192)}
	p.done.Add(2)
	go p.read(from)
	go p.write(to)
	return p
}

func (p *pipe) read(from *os.File) {
	defer p.done.Done()
	defer close(p.q)
	var free time.Time // when the bottleneck has sent all it holds
	for {
		buf := make([]byte, 65536)
		n, err := from.Read(buf)
		if err != nil {
			return
		}
		now := time.Now()
		if p.link.Loss > 0 && rand.Float64() < p.link.Loss {
			p.lost.Add(1)
			continue
		}
		leave := now
		if p.link.RateBPS > 0 {
			if free.Before(now) {
				free = now
			}
			// What waits ahead of this packet, in bytes.
			if backlog := free.Sub(now).Seconds() * float64(p.link.RateBPS) / 8; int(backlog)+n > p.link.QueueBytes {
				p.dropped.Add(1)
				continue
			}
			free = free.Add(time.Duration(float64(n*8) / float64(p.link.RateBPS) * float64(time.Second)))
			leave = free
		}
		select {
		case p.q <- timed{buf[:n], leave.Add(p.link.Delay)}:
		default:
			p.dropped.Add(1)
		}
	}
}

func (p *pipe) write(to *os.File) {
	defer p.done.Done()
	for t := range p.q {
		if d := time.Until(t.at); d > 0 {
			time.Sleep(d)
		}
		if _, err := to.Write(t.pkt); err != nil {
			// The other end closed (the test is over): drain.
			continue
		}
		p.passed.Add(1)
	}
}

func (p *pipe) wait() { p.done.Wait() }

func (p *pipe) stats() WireStats {
	return WireStats{Passed: p.passed.Load(), Lost: p.lost.Load(), Dropped: p.dropped.Load()}
}

// RequireNetAdmin skips a test that needs root, ip(8) and /dev/net/tun,
// or fails it under CI=true, where they are part of the set-up.
func RequireNetAdmin(t testing.TB) {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "not root"
	} else if _, err := exec.LookPath("ip"); err != nil {
		why = "no ip(8) (iproute2)"
	} else if _, err := os.Stat("/dev/net/tun"); err != nil {
		why = "no /dev/net/tun"
	}
	if why == "" {
		return
	}
	if strings.EqualFold(os.Getenv("CI"), "true") {
		t.Fatalf("network namespaces: %s", why)
	}
	t.Skipf("network namespaces: %s", why)
}
