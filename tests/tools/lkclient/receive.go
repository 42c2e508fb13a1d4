package main

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/rtp/codecs"
	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media/samplebuilder"
)

// remoteTrack counts what arrived on one subscribed track and what became of each frame.
type remoteTrack struct {
	participant string
	sid         string
	kind        string
	mime        string
	encryption  livekit.Encryption_Type
	// Whose code decrypts: "lkclient", or "lksdk" (LiveKit's Go SDK) for audio on request.
	decryptor string

	mu             sync.Mutex
	packets        int
	frames         int
	decrypted      int
	verified       int
	decryptFailed  int
	mismatched     int
	foreign        int
	serverInjected int
	noKey          int
	plaintextSeen  int
	firstSeq       int64
	lastSeq        int64
	firstError     string
	ice            *iceReport
}

type iceReport struct {
	Local  string `json:"local"`
	Remote string `json:"remote"`
}

type remoteReport struct {
	Participant    string     `json:"participant"`
	TrackSID       string     `json:"track_sid"`
	Kind           string     `json:"kind"`
	Mime           string     `json:"mime"`
	Encryption     string     `json:"encryption"`
	DecryptedWith  string     `json:"decrypted_with,omitempty"`
	Packets        int        `json:"rtp_packets"`
	Frames         int        `json:"frames_received"`
	Decrypted      int        `json:"frames_decrypted"`
	Verified       int        `json:"frames_verified"`
	DecryptFailed  int        `json:"decrypt_failed"`
	Mismatched     int        `json:"content_mismatch"`
	Foreign        int        `json:"foreign_frames"`
	ServerInjected int        `json:"server_injected"`
	NoKey          int        `json:"undecryptable_without_key"`
	PlaintextSeen  int        `json:"plaintext_seen"`
	FirstSeq       int64      `json:"first_seq"`
	LastSeq        int64      `json:"last_seq"`
	FirstError     string     `json:"first_error,omitempty"`
	ICE            *iceReport `json:"ice,omitempty"`
}

func (s *session) subscribed(track *webrtc.TrackRemote, pub *lksdk.RemoteTrackPublication, rp *lksdk.RemoteParticipant) {
	kind := frameKindAudio
	if track.Kind() == webrtc.RTPCodecTypeVideo {
		kind = frameKindVideo
	}
	s.mu.Lock()
	s.participants[rp.Identity()] = true
	rt, ok := s.remote[pub.SID()]
	if !ok {
		rt = &remoteTrack{
			participant: rp.Identity(),
			sid:         pub.SID(),
			kind:        kind,
			mime:        strings.ToLower(track.Codec().MimeType),
			encryption:  pub.TrackInfo().GetEncryption(),
			firstSeq:    -1,
			lastSeq:     -1,
		}
		if s.key != nil && rt.encryption != livekit.Encryption_NONE {
			rt.decryptor = "lkclient"
			if s.sdkKey != nil && kind == frameKindAudio {
				rt.decryptor = "lksdk"
			}
		}
		s.remote[pub.SID()] = rt
	}
	s.mu.Unlock()
	var cipher *frameCipher
	if s.key != nil {
		c, err := newFrameCipher(s.key, uint8(s.o.keyIndex))
		if err == nil {
			cipher = c
		}
	}
	go s.read(rt, track, pub.Receiver(), cipher)
}

func (s *session) read(rt *remoteTrack, track *webrtc.TrackRemote, receiver *webrtc.RTPReceiver, cipher *frameCipher) {
	var sb *samplebuilder.SampleBuilder
	if rt.kind == frameKindVideo {
		if rt.mime != strings.ToLower(webrtc.MimeTypeVP8) {
			rt.fail(fmt.Sprintf("cannot reassemble %s frames", rt.mime))
			return
		}
		sb = samplebuilder.New(256, &codecs.VP8Packet{}, track.Codec().ClockRate)
	}
	for {
		pkt, _, err := track.ReadRTP()
		if err != nil {
			return
		}
		rt.mu.Lock()
		rt.packets++
		rt.mu.Unlock()
		if sb == nil {
			if len(pkt.Payload) > 0 {
				s.frame(rt, pkt.Payload, receiver, cipher)
			}
			continue
		}
		sb.Push(pkt)
		for sample := sb.Pop(); sample != nil; sample = sb.Pop() {
			s.frame(rt, sample.Data, receiver, cipher)
		}
	}
}

// frame judges one reassembled frame: decrypt it when the SFU says the track is encrypted,
// then check it byte for byte.
func (s *session) frame(rt *remoteTrack, data []byte, receiver *webrtc.RTPReceiver, cipher *frameCipher) {
	rt.mu.Lock()
	if rt.ice == nil && receiver != nil {
		rt.ice = selectedPair(receiver)
	}
	rt.frames++
	// What the SFU forwarded on an encrypted track must not show the plaintext's marker.
	if rt.encryption != livekit.Encryption_NONE && bytes.Contains(data, []byte(frameMagic)) {
		rt.plaintextSeen++
	}
	plain := data
	switch {
	case rt.encryption == livekit.Encryption_NONE:
	case cipher == nil:
		rt.noKey++
		plain = nil
	default:
		p, err := s.decrypt(rt, cipher, data)
		switch {
		case errors.Is(err, errServerInjected):
			rt.serverInjected++
			plain = nil
		case err != nil:
			rt.decryptFailed++
			rt.noteError("decrypt: " + err.Error())
			plain = nil
		default:
			rt.decrypted++
			plain = p
		}
	}
	if plain != nil {
		seq, err := verifyFrame(rt.kind, plain)
		switch {
		case errors.Is(err, errForeign):
			rt.foreign++
			rt.noteError("verify: " + err.Error())
		case err != nil:
			rt.mismatched++
			rt.noteError("verify: " + err.Error())
		default:
			rt.verified++
			if rt.firstSeq < 0 {
				rt.firstSeq = int64(seq)
			}
			rt.lastSeq = int64(seq)
		}
	}
	rt.mu.Unlock()
	s.checkGoal()
}

func (s *session) decrypt(rt *remoteTrack, c *frameCipher, data []byte) ([]byte, error) {
	sif := s.room.SifTrailer()
	if rt.decryptor == "lksdk" {
		p, err := lksdk.DecryptGCMAudioSample(data, s.sdkKey, sif)
		if err == nil && p == nil {
			return nil, errServerInjected
		}
		return p, err
	}
	return c.decrypt(rt.kind, data, sif)
}

func selectedPair(receiver *webrtc.RTPReceiver) *iceReport {
	dtls := receiver.Transport()
	if dtls == nil {
		return nil
	}
	pair, err := dtls.ICETransport().GetSelectedCandidatePair()
	if err != nil || pair == nil || pair.Local == nil || pair.Remote == nil {
		return nil
	}
	show := func(c *webrtc.ICECandidate) string {
		return fmt.Sprintf("%s %s %s:%d", c.Typ, c.Protocol, c.Address, c.Port)
	}
	return &iceReport{Local: show(pair.Local), Remote: show(pair.Remote)}
}

func (rt *remoteTrack) noteError(e string) {
	if rt.firstError == "" {
		rt.firstError = e
	}
}

func (rt *remoteTrack) fail(e string) {
	rt.mu.Lock()
	rt.noteError(e)
	rt.mu.Unlock()
}

// count is what counts towards the goal: frames verified, or frames received at all.
func (rt *remoteTrack) count(verified bool) int {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if verified {
		return rt.verified
	}
	return rt.frames
}

func (rt *remoteTrack) report() remoteReport {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return remoteReport{
		Participant:    rt.participant,
		TrackSID:       rt.sid,
		Kind:           rt.kind,
		Mime:           rt.mime,
		Encryption:     rt.encryption.String(),
		DecryptedWith:  rt.decryptor,
		Packets:        rt.packets,
		Frames:         rt.frames,
		Decrypted:      rt.decrypted,
		Verified:       rt.verified,
		DecryptFailed:  rt.decryptFailed,
		Mismatched:     rt.mismatched,
		Foreign:        rt.foreign,
		ServerInjected: rt.serverInjected,
		NoKey:          rt.noKey,
		PlaintextSeen:  rt.plaintextSeen,
		FirstSeq:       rt.firstSeq,
		LastSeq:        rt.lastSeq,
		FirstError:     rt.firstError,
		ICE:            rt.ice,
	}
}
