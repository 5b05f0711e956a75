package testpeer

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// Orthanc is a running Orthanc PACS with its DICOMweb plugin.
type Orthanc struct {
	// Base is the REST root; DICOMweb the STOW/QIDO root.
	Base, DICOMweb     string
	Username, Password string
}

// orthancPlugin is where Debian's orthanc-dicomweb puts the plugin.
const orthancPlugin = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// StartOrthanc runs Debian's Orthanc on loopback, with basic auth and an
// empty store in a temporary directory, until the test ends.
func StartOrthanc(t testing.TB) *Orthanc {
	t.Helper()
	Need(t, "Orthanc")
	if _, err := os.Stat(orthancPlugin); err != nil {
		missing(t, "orthanc-dicomweb not installed (make setup installs it)")
	}
	dir := t.TempDir()
	port, dicomPort := freePort(t), freePort(t)
	o := &Orthanc{Base: fmt.Sprintf("http://127.0.0.1:%d", port), Username: "sonolive", Password: "pacs-test-password"}
	o.DICOMweb = o.Base + "/dicom-web"
	cfg := map[string]any{
		"Name": "sonolive-test", "StorageDirectory": filepath.Join(dir, "db"), "IndexDirectory": filepath.Join(dir, "db"),
		"HttpPort": port, "DicomPort": dicomPort, "RemoteAccessAllowed": false,
		"AuthenticationEnabled": true, "RegisteredUsers": map[string]string{o.Username: o.Password},
		"Plugins": []string{orthancPlugin}, "DicomWeb": map[string]any{"Enable": true, "Root": "/dicom-web/"},
	}
	b, _ := json.Marshal(cfg)
	cfgPath := filepath.Join(dir, "orthanc.json")
	if err := os.WriteFile(cfgPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	cmd := exec.Command("Orthanc", cfgPath)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		req, _ := http.NewRequest("GET", o.Base+"/system", nil)
		req.SetBasicAuth(o.Username, o.Password)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return o
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("Orthanc did not start:\n%s", logs.String())
		}
	}
}

// QIDO runs a QIDO-RS query (path under the DICOMweb root) and returns
// the DICOM JSON results.
func (o *Orthanc) QIDO(t testing.TB, path string) []map[string]struct {
	Value []any `json:"Value"`
} {
	t.Helper()
	req, _ := http.NewRequest("GET", o.DICOMweb+path, nil)
	req.SetBasicAuth(o.Username, o.Password)
	req.Header.Set("Accept", "application/dicom+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out []map[string]struct {
		Value []any `json:"Value"`
	}
	if resp.StatusCode == http.StatusNoContent {
		return out
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("QIDO %s: %d: %v", path, resp.StatusCode, err)
	}
	return out
}
