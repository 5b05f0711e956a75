// Command sonolive is the real-time ultrasound AI streaming service.
//
//	sonolive serve    serve the live annotated stream to the web pages and WHEP players
//	sonolive hub      let experts reach boxes behind firewalls that let nothing in
//	sonolive bench    connect many WebRTC viewers to a running server and measure it
//	sonolive run      run the live pipeline on one source (offline or paced)
//	sonolive eval     measure a detector on a COCO data set through the live path
//	sonolive phantom  write synthetic phantom frames with ground truth (COCO)
//	sonolive audit    verify the hash chain of the access log
//
// Each subcommand documents its flags under --help.
package main

import (
	"fmt"
	"os"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "run":
		err = runCmd(os.Args[2:])
	case "phantom":
		err = phantomCmd(os.Args[2:])
	case "serve":
		err = serveCmd(os.Args[2:])
	case "hub":
		err = hubCmd(os.Args[2:])
	case "bench":
		err = benchCmd(os.Args[2:])
	case "eval":
		err = evalCmd(os.Args[2:])
	case "audit":
		err = auditCmd(os.Args[2:])
	case "-h", "--help", "help":
		usage()
		return
	default:
		fmt.Fprintf(os.Stderr, "sonolive: unknown command %q\n", os.Args[1])
		usage()
		os.Exit(2)
	}
	if err != nil {
		// One line, for the sonographer or the script that started us.
		fmt.Fprintf(os.Stderr, "sonolive: %v\n", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprint(os.Stderr, `usage: sonolive <command> [flags]

commands:
  serve     serve the live annotated stream: web pages for the sonographer and experts, WebRTC/WHEP
  hub       a hub outside the clinics' networks: boxes link out to it, experts reach them through it
  bench     'bench viewers': connect N WebRTC viewers to a running server; frames per viewer, CPU and memory
  run       run the live pipeline on one source: capture -> AI within a latency budget -> overlay
  eval      measure a detector on a COCO data set through the live pipeline's preprocessing and decoding
  phantom   write synthetic phantom frames and their ground truth as a COCO data set
  audit     'audit verify FILE': check the access log's hash chain (a removed or edited line is named)

Run 'sonolive <command> --help' for the flags of a command.
`)
}

func newLogger(level string) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("log level %q: %w", level, err)
	}
	cfg := zap.NewProductionConfig()
	cfg.Level = zap.NewAtomicLevelAt(lvl)
	cfg.Encoding = "console"
	cfg.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	cfg.DisableStacktrace = true
	cfg.Sampling = nil
	return cfg.Build()
}
