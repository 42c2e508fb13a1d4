// lkclient is Conclave's LiveKit test client: a real WebRTC participant (LiveKit's Go SDK on
// pion) that joins a room with an access token, publishes synthetic audio and video, end-to-end
// encrypted in the format LiveKit's browser and Go SDKs use when given a shared passphrase,
// subscribes to everything and verifies every frame it receives byte for byte.
//
// Usage:
//
//	lkclient join --url ws://HOST:PORT [--token T] [--key K] [options]
//	lkclient selftest
//
// The token and key may come from $LKCLIENT_TOKEN and $LKCLIENT_KEY instead, which keeps them
// out of process listings. stdout carries JSON lines only: events while running
// ({"event":"joined"}, {"event":"goal"}) and, last, one {"event":"result"}; logs go to stderr.
//
// Exit codes: 0 ran to its stop condition; 1 internal error; 2 bad usage; 3 the server refused
// the join; 4 could not connect; 5 the frame goal was not met before --timeout; 6 the server
// disconnected the participant.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
)

const (
	exitOK           = 0
	exitInternal     = 1
	exitUsage        = 2
	exitRefused      = 3
	exitConnect      = 4
	exitTimeout      = 5
	exitDisconnected = 6
)

type options struct {
	url          string
	token        string
	key          string
	keyIndex     uint
	publish      []string
	relayOnly    bool
	duration     time.Duration
	timeout      time.Duration
	connectWait  time.Duration
	untilFrames  int
	goalVerified bool
	expectTracks int
	waitStdin    bool
	sdkAudio     bool
	logLevel     string
}

func parseJoin(args []string) (options, error) {
	var o options
	var publish string
	fs := flag.NewFlagSet("join", flag.ContinueOnError)
	fs.StringVar(&o.url, "url", "", "LiveKit signalling URL, ws://host:port")
	fs.StringVar(&o.token, "token", "", "access token (default $LKCLIENT_TOKEN)")
	fs.StringVar(&o.key, "key", "", "shared E2EE passphrase (default $LKCLIENT_KEY); none: publish in clear")
	fs.UintVar(&o.keyIndex, "key-index", 0, "key index written into encrypted frames")
	fs.StringVar(&publish, "publish", "audio,video", "tracks to publish: audio, video, both, or none")
	fs.BoolVar(&o.relayOnly, "relay-only", false, "ICE through TURN relays only (the servers LiveKit hands out)")
	fs.DurationVar(&o.duration, "duration", 0, "stop this long after joining (0: no limit)")
	fs.DurationVar(&o.timeout, "timeout", 60*time.Second, "hard deadline for the whole run")
	fs.DurationVar(&o.connectWait, "connect-timeout", 20*time.Second, "deadline for joining")
	fs.IntVar(&o.untilFrames, "until-frames", 0, "goal: this many frames received (whatever became of them) on each of --expect-tracks remote tracks")
	untilVerified := fs.Int("until-verified", 0, "goal: this many frames verified on each of --expect-tracks remote tracks")
	fs.IntVar(&o.expectTracks, "expect-tracks", 2, "remote tracks the frame goal needs")
	fs.BoolVar(&o.waitStdin, "wait-stdin", false, "after the goal or duration, keep publishing until stdin closes")
	fs.BoolVar(&o.sdkAudio, "sdk-audio-decrypt", false,
		"decrypt audio with LiveKit's Go SDK (DeriveKeyFromString, DecryptGCMAudioSample) instead of this client's code")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level on stderr")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *untilVerified != 0 {
		if o.untilFrames != 0 {
			return o, errors.New("--until-frames and --until-verified are alternatives")
		}
		o.untilFrames, o.goalVerified = *untilVerified, true
	}
	if o.token == "" {
		o.token = os.Getenv("LKCLIENT_TOKEN")
	}
	if o.key == "" {
		o.key = os.Getenv("LKCLIENT_KEY")
	}
	switch {
	case o.url == "":
		return o, errors.New("--url is required")
	case o.token == "":
		return o, errors.New("--token or $LKCLIENT_TOKEN is required")
	case o.keyIndex > maxKeyIndex:
		return o, fmt.Errorf("--key-index must be at most %d", maxKeyIndex)
	case o.untilFrames < 0 || o.expectTracks < 0:
		return o, errors.New("--until-frames and --expect-tracks cannot be negative")
	case o.untilFrames > 0 && o.expectTracks == 0:
		return o, errors.New("--until-frames needs --expect-tracks > 0")
	case o.timeout <= 0:
		return o, errors.New("--timeout must be positive")
	}
	switch publish {
	case "none", "":
	case "both":
		o.publish = []string{frameKindAudio, frameKindVideo}
	default:
		for _, k := range strings.Split(publish, ",") {
			if k != frameKindAudio && k != frameKindVideo {
				return o, fmt.Errorf("--publish: unknown track kind %q", k)
			}
			o.publish = append(o.publish, k)
		}
	}
	return o, nil
}

// emitter writes one JSON object per line to stdout, never interleaved.
type emitter struct{ mu sync.Mutex }

func (e *emitter) emit(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		b = []byte(fmt.Sprintf(`{"event":"error","error":%q}`, err.Error()))
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	os.Stdout.Write(append(b, '\n'))
}

var out emitter

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: lkclient join --url ws://HOST:PORT [--token T] [--key K] [options] | lkclient selftest")
		os.Exit(exitUsage)
	}
	switch os.Args[1] {
	case "join":
		o, err := parseJoin(os.Args[2:])
		if err != nil {
			fmt.Fprintln(os.Stderr, "lkclient join:", err)
			out.emit(map[string]any{"event": "result", "outcome": "usage", "exit_code": exitUsage, "reason": err.Error()})
			os.Exit(exitUsage)
		}
		os.Exit(runJoin(o))
	case "selftest":
		os.Exit(runSelftest())
	default:
		fmt.Fprintf(os.Stderr, "lkclient: unknown command %q\n", os.Args[1])
		os.Exit(exitUsage)
	}
}
