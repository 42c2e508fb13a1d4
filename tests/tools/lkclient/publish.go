package main

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media"
)

const (
	audioInterval = 20 * time.Millisecond
	videoInterval = 33 * time.Millisecond
	// A key frame at least this often, besides the ones the SFU asks for, so a subscriber
	// that joins later starts within a second or two.
	keyFrameEvery = 60
)

// localTrack is one published track and what was sent on it.
type localTrack struct {
	kind       string
	track      *lksdk.LocalTrack
	sid        string
	encryption livekit.Encryption_Type
	cipher     *frameCipher

	keyRequested atomic.Bool
	mu           sync.Mutex
	sent         int
	keyFrames    int
	keyRequests  int
	writeErrors  int
	firstError   string
}

type localReport struct {
	Kind        string `json:"kind"`
	TrackSID    string `json:"track_sid"`
	Encryption  string `json:"encryption"`
	FramesSent  int    `json:"frames_sent"`
	KeyFrames   int    `json:"key_frames_sent"`
	KeyRequests int    `json:"key_frame_requests"`
	WriteErrors int    `json:"write_errors"`
	FirstError  string `json:"first_error,omitempty"`
}

func (s *session) publish(kind string) (*localTrack, error) {
	lt := &localTrack{kind: kind, encryption: livekit.Encryption_NONE}
	if s.key != nil {
		c, err := newFrameCipher(s.key, uint8(s.o.keyIndex))
		if err != nil {
			return nil, err
		}
		lt.cipher = c
		lt.encryption = livekit.Encryption_GCM
	}
	codec := webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}
	opts := &lksdk.TrackPublicationOptions{
		Name:       "lkclient-" + kind,
		Source:     livekit.TrackSource_MICROPHONE,
		Encryption: lt.encryption,
	}
	if kind == frameKindVideo {
		codec = webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}
		opts.Source = livekit.TrackSource_CAMERA
		opts.VideoWidth, opts.VideoHeight = videoWidth, videoHeight
	}
	track, err := lksdk.NewLocalSampleTrack(codec, lksdk.WithRTCPHandler(lt.onRTCP))
	if err != nil {
		return nil, err
	}
	lt.track = track
	pub, err := s.room.LocalParticipant.PublishTrack(track, opts)
	if err != nil {
		return nil, err
	}
	lt.sid = pub.SID()
	go lt.write(s.leaving)
	return lt, nil
}

// onRTCP turns the SFU's key-frame requests into a key frame on the next tick.
func (lt *localTrack) onRTCP(p rtcp.Packet) {
	switch p.(type) {
	case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
		lt.keyRequested.Store(true)
		lt.mu.Lock()
		lt.keyRequests++
		lt.mu.Unlock()
	}
}

func (lt *localTrack) write(stop <-chan struct{}) {
	interval := audioInterval
	if lt.kind == frameKindVideo {
		interval = videoInterval
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	seq := uint32(0)
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		// Samples written before the SFU negotiated the track would be dropped unsent.
		if !lt.track.IsBound() {
			continue
		}
		key := lt.kind == frameKindVideo && (seq%keyFrameEvery == 0 || lt.keyRequested.Swap(false))
		frame := makeFrame(lt.kind, seq, key)
		if lt.cipher != nil {
			frame = lt.cipher.encrypt(lt.kind, frame)
		}
		err := lt.track.WriteSample(media.Sample{Data: frame, Duration: interval}, nil)
		lt.mu.Lock()
		if err != nil {
			lt.writeErrors++
			if lt.firstError == "" {
				lt.firstError = err.Error()
			}
		} else {
			lt.sent++
			if key {
				lt.keyFrames++
			}
		}
		lt.mu.Unlock()
		seq++
	}
}

func (lt *localTrack) report() localReport {
	lt.mu.Lock()
	defer lt.mu.Unlock()
	return localReport{
		Kind:        lt.kind,
		TrackSID:    lt.sid,
		Encryption:  lt.encryption.String(),
		FramesSent:  lt.sent,
		KeyFrames:   lt.keyFrames,
		KeyRequests: lt.keyRequests,
		WriteErrors: lt.writeErrors,
		FirstError:  lt.firstError,
	}
}
