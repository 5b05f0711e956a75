package sfu

import (
	protoLogger "github.com/livekit/protocol/logger"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"go.uber.org/zap"
)

// UseLogger sends the LiveKit SDK's logs (its own and its pion's) to log
// at warnings and above. The SDK keeps one logger for the process: call
// this once, before the first publisher runs. Without it the SDK writes
// every pion state change to stderr.
func UseLogger(log *zap.Logger) error {
	l, err := protoLogger.FromZapLogger(log.Named("livekit"), &protoLogger.Config{Level: "warn"})
	if err != nil {
		return err
	}
	lksdk.SetLogger(l)
	return nil
}
