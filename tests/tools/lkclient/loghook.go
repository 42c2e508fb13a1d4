package main

import (
	"errors"
	"fmt"
	"strings"
	"sync"

	protoLogger "github.com/livekit/protocol/logger"
)

// logHook sees everything the SDK logs, for two reasons: the SDK reports a refused signalling
// handshake's HTTP status and body only in its log, and LiveKit echoes a refused token in that
// body, which must not reach a log (nor the key, should anything print it).
type logHook struct {
	secrets []string

	mu       sync.Mutex
	status   int
	response string
}

// The SDK's message for a WebSocket handshake the server answered with an error.
const handshakeFailed = "error establishing signal connection"

func (h *logHook) scrub(s string) string {
	for _, secret := range h.secrets {
		if secret != "" {
			s = strings.ReplaceAll(s, secret, "<redacted>")
		}
	}
	return s
}

func (h *logHook) scrubValues(kv []any) []any {
	out := make([]any, len(kv))
	for i, v := range kv {
		switch x := v.(type) {
		case string:
			out[i] = h.scrub(x)
		case error:
			out[i] = h.scrubErr(x)
		case fmt.Stringer:
			out[i] = h.scrub(x.String())
		default:
			out[i] = v
		}
	}
	return out
}

func (h *logHook) scrubErr(err error) error {
	if err == nil {
		return nil
	}
	if s := h.scrub(err.Error()); s != err.Error() {
		return errors.New(s)
	}
	return err
}

func (h *logHook) observe(msg string, kv []any) {
	if msg != handshakeFailed {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for i := 0; i+1 < len(kv); i += 2 {
		switch kv[i] {
		case "status":
			if n, ok := kv[i+1].(int); ok {
				h.status = n
			}
		case "response":
			if s, ok := kv[i+1].(string); ok {
				h.response = s
			}
		}
	}
}

// handshake is the last refused handshake's HTTP status and body (0 if none was refused).
func (h *logHook) handshake() (int, string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.status, h.response
}

// hookLogger passes every record through the hook on its way to the real logger.
type hookLogger struct {
	protoLogger.Logger
	h *logHook
}

func (l hookLogger) wrap(n protoLogger.Logger) protoLogger.Logger { return hookLogger{n, l.h} }

func (l hookLogger) Debugw(msg string, kv ...any) {
	l.Logger.WithCallDepth(1).Debugw(msg, l.h.scrubValues(kv)...)
}

func (l hookLogger) Infow(msg string, kv ...any) {
	l.Logger.WithCallDepth(1).Infow(msg, l.h.scrubValues(kv)...)
}

func (l hookLogger) Warnw(msg string, err error, kv ...any) {
	l.Logger.WithCallDepth(1).Warnw(msg, l.h.scrubErr(err), l.h.scrubValues(kv)...)
}

func (l hookLogger) Errorw(msg string, err error, kv ...any) {
	l.h.observe(msg, kv)
	l.Logger.WithCallDepth(1).Errorw(msg, l.h.scrubErr(err), l.h.scrubValues(kv)...)
}

func (l hookLogger) WithValues(kv ...any) protoLogger.Logger {
	return l.wrap(l.Logger.WithValues(l.h.scrubValues(kv)...))
}

func (l hookLogger) WithUnlikelyValues(kv ...any) protoLogger.UnlikelyLogger {
	return protoLogger.NewUnlikelyLogger(l, kv...)
}

func (l hookLogger) WithName(name string) protoLogger.Logger { return l.wrap(l.Logger.WithName(name)) }

func (l hookLogger) WithComponent(c string) protoLogger.Logger {
	return l.wrap(l.Logger.WithComponent(c))
}

func (l hookLogger) WithCallDepth(d int) protoLogger.Logger { return l.wrap(l.Logger.WithCallDepth(d)) }

func (l hookLogger) WithItemSampler() protoLogger.Logger { return l.wrap(l.Logger.WithItemSampler()) }

func (l hookLogger) WithoutSampler() protoLogger.Logger { return l.wrap(l.Logger.WithoutSampler()) }

func (l hookLogger) WithDeferredValues() (protoLogger.Logger, protoLogger.DeferredFieldResolver) {
	n, r := l.Logger.WithDeferredValues()
	return l.wrap(n), r
}
