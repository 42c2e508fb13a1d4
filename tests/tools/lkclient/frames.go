package main

// Synthetic media frames whose every byte follows from a sequence number, so a receiver can
// check each frame it decrypts byte for byte. No codec runs: the SFU forwards frames without
// decoding them and only reads the clear headers, which are valid Opus and VP8 headers.
//
// Layout (plaintext):
//
//	codec header | "LKCT" | kind (1) | flags (1) | seq (4, BE) | length (2, BE) | pattern
//
// The codec header is the part that stays in clear under E2EE (see clearBytes): an Opus TOC
// byte, or a VP8 frame tag (plus start code and dimensions on key frames). length is the
// whole frame's length; pattern bytes come from a splitmix64 stream seeded by kind and seq.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// errForeign marks a frame that is not one of ours at all (no marker where ours has it): the
// SFU's own silence or blank frames on a clear track, or another client's media.
var errForeign = errors.New("not an lkclient frame")

const (
	frameMagic = "LKCT"
	// Opus TOC byte: configuration 31 (CELT, fullband, 20 ms), mono, one frame.
	opusTOC = 31 << 3
	// Dimensions written into VP8 key frames, and announced when publishing.
	videoWidth  = 640
	videoHeight = 360
	flagKey     = 0x01
	bodyHeader  = len(frameMagic) + 1 + 1 + 4 + 2
)

func kindByte(kind string) byte {
	if kind == frameKindVideo {
		return 'v'
	}
	return 'a'
}

// frameLength varies with seq so that frames of several sizes cross the SFU, key frames
// large enough to span several RTP packets.
func frameLength(kind string, seq uint32, key bool) int {
	switch {
	case kind == frameKindAudio:
		return 40 + int(seq*13%120)
	case key:
		return 2500 + int(seq*101%1500)
	default:
		return 150 + int(seq*37%1100)
	}
}

// vp8Header writes a VP8 frame tag (RFC 6386 9.1): key-frame bit (0 = key), version 0,
// show_frame 1, first partition size; key frames add the start code and dimensions.
func vp8Header(key bool, length int) []byte {
	clear := clearVP8Delta
	if key {
		clear = clearVP8Key
	}
	firstPartition := uint32(length - clear)
	tag := uint32(1<<4) | (firstPartition&0x7ffff)<<5
	if !key {
		tag |= 1
	}
	h := []byte{byte(tag), byte(tag >> 8), byte(tag >> 16)}
	if key {
		h = append(h, 0x9d, 0x01, 0x2a)
		h = binary.LittleEndian.AppendUint16(h, videoWidth)
		h = binary.LittleEndian.AppendUint16(h, videoHeight)
	}
	return h
}

// makeFrame builds frame seq of a track of the given kind.
func makeFrame(kind string, seq uint32, key bool) []byte {
	length := frameLength(kind, seq, key)
	var f []byte
	if kind == frameKindVideo {
		f = vp8Header(key, length)
	} else {
		f = []byte{opusTOC}
		key = false
	}
	flags := byte(0)
	if key {
		flags = flagKey
	}
	f = append(f, frameMagic...)
	f = append(f, kindByte(kind), flags)
	f = binary.BigEndian.AppendUint32(f, seq)
	f = binary.BigEndian.AppendUint16(f, uint16(length))
	state := uint64(seq)<<8 | uint64(kindByte(kind))
	for len(f) < length {
		state += 0x9e3779b97f4a7c15
		z := state
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
		z = (z ^ (z >> 27)) * 0x94d049bb133111eb
		z ^= z >> 31
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], z)
		f = append(f, b[:min(8, length-len(f))]...)
	}
	return f
}

// verifyFrame checks a received plaintext frame against the frame its own sequence number
// says it is, and returns that number.
func verifyFrame(kind string, f []byte) (uint32, error) {
	off := clearBytes(kind, f)
	if len(f) < off+bodyHeader || !bytes.Equal(f[off:off+4], []byte(frameMagic)) {
		return 0, fmt.Errorf("%w: %d bytes, no %q marker after the %d-byte header", errForeign, len(f), frameMagic, off)
	}
	body := f[off:]
	if body[4] != kindByte(kind) {
		return 0, fmt.Errorf("an %q frame on a %s track", body[4], kind)
	}
	seq := binary.BigEndian.Uint32(body[6:10])
	want := makeFrame(kind, seq, body[5]&flagKey != 0)
	if !bytes.Equal(f, want) {
		return seq, fmt.Errorf("frame %d differs from the expected %d bytes (got %d)", seq, len(want), len(f))
	}
	return seq, nil
}
