package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/livekit/protocol/livekit"
	protoLogger "github.com/livekit/protocol/logger"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/webrtc/v4"
)

// session is one participant's run: what it publishes, what it receives, and how it ends.
type session struct {
	o       options
	started time.Time
	key     []byte
	// The key LiveKit's Go SDK derives, when audio is decrypted with the SDK's code.
	sdkKey []byte
	room   *lksdk.Room
	hook   *logHook
	joined bool

	mu           sync.Mutex
	remote       map[string]*remoteTrack
	local        []*localTrack
	participants map[string]bool

	goal         chan struct{}
	goalOnce     sync.Once
	disconnected chan string
	leaving      chan struct{}
}

type result struct {
	Event           string          `json:"event"`
	Outcome         string          `json:"outcome"`
	ExitCode        int             `json:"exit_code"`
	Reason          string          `json:"reason"`
	HTTPStatus      int             `json:"http_status,omitempty"`
	Identity        string          `json:"identity,omitempty"`
	ParticipantSID  string          `json:"participant_sid,omitempty"`
	Room            string          `json:"room,omitempty"`
	RoomSID         string          `json:"room_sid,omitempty"`
	ServerNode      string          `json:"server_node,omitempty"`
	ServerVersion   string          `json:"server_version,omitempty"`
	E2EE            bool            `json:"e2ee"`
	KeyDerivationMS int64           `json:"key_derivation_ms,omitempty"`
	RelayOnly       bool            `json:"relay_only"`
	ElapsedMS       int64           `json:"elapsed_ms"`
	Participants    []string        `json:"participants"`
	Published       []localReport   `json:"published"`
	Received        []remoteReport  `json:"received"`
	Goal            *goalDefinition `json:"goal,omitempty"`
}

type goalDefinition struct {
	Frames int `json:"frames_per_track"`
	// "received" or "verified": what counts towards Frames.
	Counts string `json:"counts"`
	Tracks int    `json:"tracks"`
	Met    bool   `json:"met"`
}

func runJoin(o options) int {
	s := &session{
		o:            o,
		started:      time.Now(),
		remote:       map[string]*remoteTrack{},
		participants: map[string]bool{},
		goal:         make(chan struct{}),
		disconnected: make(chan string, 1),
		leaving:      make(chan struct{}),
	}
	protoLogger.InitFromConfig(&protoLogger.Config{Level: o.logLevel}, "lkclient")
	s.hook = &logHook{secrets: []string{o.token, o.key}}
	lksdk.SetLogger(hookLogger{protoLogger.GetLogger(), s.hook})

	res := result{Event: "result", RelayOnly: o.relayOnly, E2EE: o.key != ""}
	if o.key != "" {
		t := time.Now()
		key, err := deriveKey(o.key)
		if err != nil {
			return s.finish(res, "error", exitInternal, err.Error())
		}
		s.key = key
		res.KeyDerivationMS = time.Since(t).Milliseconds()
		if o.sdkAudio {
			if s.sdkKey, err = lksdk.DeriveKeyFromString(o.key); err != nil {
				return s.finish(res, "error", exitInternal, err.Error())
			}
		}
	}

	s.room = lksdk.NewRoom(s.callbacks())
	opts := []lksdk.ConnectOption{
		lksdk.WithAutoSubscribe(true),
		lksdk.WithConnectTimeout(o.connectWait),
	}
	if o.relayOnly {
		opts = append(opts, lksdk.WithICETransportPolicy(webrtc.ICETransportPolicyRelay))
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.connectWait)
	err := s.room.JoinWithContextAndToken(ctx, o.url, o.token, opts...)
	cancel()
	if err != nil {
		return s.refusedOrFailed(res, err)
	}
	s.joined = true
	s.describe(&res)
	out.emit(map[string]any{
		"event": "joined", "identity": res.Identity, "participant_sid": res.ParticipantSID,
		"room": res.Room, "room_sid": res.RoomSID, "server_node": res.ServerNode,
		"server_version": res.ServerVersion, "elapsed_ms": time.Since(s.started).Milliseconds(),
	})

	for _, kind := range o.publish {
		lt, err := s.publish(kind)
		if err != nil {
			s.room.Disconnect()
			return s.finish(res, "error", exitInternal, fmt.Sprintf("publishing %s: %v", kind, err))
		}
		s.mu.Lock()
		s.local = append(s.local, lt)
		s.mu.Unlock()
	}

	outcome, code, reason := s.wait()
	close(s.leaving)
	s.room.Disconnect()
	return s.finish(res, outcome, code, reason)
}

// wait runs until a stop condition and says how the run ended.
func (s *session) wait() (string, int, string) {
	o := s.o
	deadline := time.NewTimer(time.Until(s.started.Add(o.timeout)))
	defer deadline.Stop()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	stdinClosed := make(chan struct{})
	if o.waitStdin {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			close(stdinClosed)
		}()
	}
	var goal <-chan struct{}
	if o.untilFrames > 0 {
		goal = s.goal
	}
	var elapsed <-chan time.Time
	if o.duration > 0 {
		elapsed = time.After(o.duration)
	}

	// Phase 1: the goal (or the duration, when there is no goal).
	reached := ""
	for reached == "" {
		select {
		case <-goal:
			reached = "frame goal reached"
		case <-elapsed:
			if o.untilFrames > 0 {
				return "incomplete", exitTimeout, fmt.Sprintf("frame goal not reached within --duration %s", o.duration)
			}
			reached = "duration elapsed"
		case <-deadline.C:
			if o.untilFrames > 0 {
				return "incomplete", exitTimeout, fmt.Sprintf("frame goal not reached within --timeout %s", o.timeout)
			}
			return "ok", exitOK, "timeout elapsed (no goal was set)"
		case r := <-s.disconnected:
			return "disconnected", exitDisconnected, r
		case sig := <-sigs:
			return "incomplete", exitTimeout, "stopped by " + sig.String() + " before the goal"
		case <-stdinClosed:
			if o.untilFrames > 0 || o.duration > 0 {
				return "incomplete", exitTimeout, "stdin closed before the goal"
			}
			reached = "stdin closed"
			stdinClosed = nil
		}
	}
	if !o.waitStdin || stdinClosed == nil {
		return "ok", exitOK, reached
	}
	out.emit(map[string]any{"event": "goal", "reason": reached, "elapsed_ms": time.Since(s.started).Milliseconds()})
	// Phase 2: keep publishing for the others until the caller closes stdin.
	select {
	case <-stdinClosed:
		return "ok", exitOK, reached + ", then stdin closed"
	case <-deadline.C:
		return "ok", exitOK, reached + ", then --timeout elapsed while waiting for stdin"
	case r := <-s.disconnected:
		return "disconnected", exitDisconnected, reached + ", then " + r
	case sig := <-sigs:
		return "ok", exitOK, reached + ", then " + sig.String()
	}
}

func (s *session) callbacks() *lksdk.RoomCallback {
	cb := lksdk.NewRoomCallback()
	cb.OnTrackSubscribed = func(track *webrtc.TrackRemote, pub *lksdk.RemoteTrackPublication, rp *lksdk.RemoteParticipant) {
		s.subscribed(track, pub, rp)
	}
	cb.OnParticipantConnected = func(rp *lksdk.RemoteParticipant) {
		s.mu.Lock()
		s.participants[rp.Identity()] = true
		s.mu.Unlock()
	}
	cb.OnDisconnectedWithReason = func(reason lksdk.DisconnectionReason) {
		select {
		case <-s.leaving:
			return
		default:
		}
		detail := string(reason)
		if r := s.room.DisconnectReason(); r != livekit.DisconnectReason_UNKNOWN_REASON {
			detail += " (" + r.String() + ")"
		}
		select {
		case s.disconnected <- "disconnected by the server: " + detail:
		default:
		}
	}
	return cb
}

// refusedOrFailed tells a refused join (the server answered with an error: a bad or expired
// token, a full room) from a failed connection (no answer, or media never connected). The
// signalling handshake's HTTP status comes from the SDK's log (see logHook); the token's own
// verdict from LiveKit's validation endpoint, which LiveKit's clients ask the same way.
func (s *session) refusedOrFailed(res result, joinErr error) int {
	if status, body := s.hook.handshake(); status >= 400 {
		res.HTTPStatus = status
		return s.finish(res, "refused", exitRefused, s.hook.scrub(strings.TrimSpace(body)))
	}
	status, body, verr := validate(s.o.url, s.o.token)
	switch {
	case verr != nil:
		return s.finish(res, "connect_failed", exitConnect, s.hook.scrub(fmt.Sprintf("%v (validation request: %v)", joinErr, verr)))
	case status != http.StatusOK:
		res.HTTPStatus = status
		return s.finish(res, "refused", exitRefused, s.hook.scrub(strings.TrimSpace(body)))
	}
	return s.finish(res, "connect_failed", exitConnect, s.hook.scrub(joinErr.Error()))
}

func validate(wsURL, token string) (int, string, error) {
	u, err := url.Parse(wsURL)
	if err != nil {
		return 0, "", err
	}
	switch u.Scheme {
	case "ws":
		u.Scheme = "http"
	case "wss":
		u.Scheme = "https"
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + "/rtc/validate"
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, string(body), nil
}

func (s *session) describe(res *result) {
	res.Identity = s.room.LocalParticipant.Identity()
	res.ParticipantSID = s.room.LocalParticipant.SID()
	res.Room = s.room.Name()
	res.RoomSID = s.roomSID(3 * time.Second)
	if info := s.room.ServerInfo(); info != nil {
		res.ServerNode = info.GetNodeId()
		res.ServerVersion = info.GetVersion()
	}
}

func (s *session) finish(res result, outcome string, code int, reason string) int {
	res.Outcome, res.ExitCode, res.Reason = outcome, code, reason
	res.ElapsedMS = time.Since(s.started).Milliseconds()
	if s.joined && res.RoomSID == "" {
		res.RoomSID = s.roomSID(time.Second)
	}
	if s.o.untilFrames > 0 {
		met := false
		select {
		case <-s.goal:
			met = true
		default:
		}
		counts := "received"
		if s.o.goalVerified {
			counts = "verified"
		}
		res.Goal = &goalDefinition{Frames: s.o.untilFrames, Counts: counts, Tracks: s.o.expectTracks, Met: met}
	}
	s.mu.Lock()
	res.Participants = []string{}
	for p := range s.participants {
		res.Participants = append(res.Participants, p)
	}
	sort.Strings(res.Participants)
	res.Published = []localReport{}
	for _, lt := range s.local {
		res.Published = append(res.Published, lt.report())
	}
	res.Received = []remoteReport{}
	for _, rt := range s.remote {
		res.Received = append(res.Received, rt.report())
	}
	s.mu.Unlock()
	sort.Slice(res.Received, func(i, j int) bool {
		a, b := res.Received[i], res.Received[j]
		return a.Participant+a.Kind+a.TrackSID < b.Participant+b.Kind+b.TrackSID
	})
	out.emit(res)
	return code
}

// roomSID waits a little for the room's SID, which the SDK learns at or shortly after the join
// (Room.SID blocks until then, forever if the join failed).
func (s *session) roomSID(wait time.Duration) string {
	ch := make(chan string, 1)
	go func() { ch <- s.room.SID() }()
	select {
	case sid := <-ch:
		return sid
	case <-time.After(wait):
		return ""
	}
}

// checkGoal closes the goal channel once enough remote tracks have received enough frames.
func (s *session) checkGoal() {
	if s.o.untilFrames == 0 {
		return
	}
	s.mu.Lock()
	n := 0
	for _, rt := range s.remote {
		if rt.count(s.o.goalVerified) >= s.o.untilFrames {
			n++
		}
	}
	s.mu.Unlock()
	if n >= s.o.expectTracks {
		s.goalOnce.Do(func() { close(s.goal) })
	}
}
