package main

// End-to-end encryption of media frames in the format LiveKit's clients use, so that this
// client, the browser SDK (livekit-client's ExternalE2EEKeyProvider with a string passphrase)
// and the Go SDK (DeriveKeyFromString) all read each other's frames.
//
// Key: PBKDF2-HMAC-SHA256 over the passphrase, salt "LKFrameEncryptionKey", 100000 iterations,
// 16 bytes (AES-128). A string passphrase goes through PBKDF2 only; the browser SDK uses HKDF
// only when it is handed raw key bytes instead of a string.
//
// Frame, after the codec's clear header:
//
//	header (clear, authenticated) | AES-GCM ciphertext+tag | IV (12) | IV length (1) | key index (1)
//
// The clear header keeps what the SFU needs to forward the frame: Opus' TOC byte (1), VP8's
// frame tag (3 bytes on a delta frame) plus start code and dimensions on a key frame (10).

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
)

const (
	keySalt        = "LKFrameEncryptionKey"
	keyIterations  = 100000
	keyBytes       = 16
	ivLength       = 12
	trailerLength  = 2
	gcmTagLength   = 16
	clearAudio     = 1
	clearVP8Key    = 10
	clearVP8Delta  = 3
	maxKeyIndex    = 255
	frameKindAudio = "audio"
	frameKindVideo = "video"
)

// deriveKey turns a shared passphrase into the AES key every LiveKit client derives from it.
func deriveKey(passphrase string) ([]byte, error) {
	if passphrase == "" {
		return nil, errors.New("empty E2EE passphrase")
	}
	return pbkdf2.Key(sha256.New, passphrase, []byte(keySalt), keyIterations, keyBytes)
}

// clearBytes is how many leading bytes of a frame stay in clear: the same rule the browser
// SDK applies (audio: the TOC byte; VP8: 10 on a key frame, 3 on a delta frame, the key-frame
// bit being the low bit of the first byte, 0 for a key frame).
func clearBytes(kind string, frame []byte) int {
	n := clearAudio
	if kind == frameKindVideo {
		n = clearVP8Delta
		if len(frame) > 0 && frame[0]&0x01 == 0 {
			n = clearVP8Key
		}
	}
	return min(n, len(frame))
}

// frameCipher encrypts and decrypts frames of one track with one key.
type frameCipher struct {
	aead     cipher.AEAD
	keyIndex uint8
	// ivPrefix and counter make every IV unique for this track: a random 32-bit prefix (the
	// browser SDK uses the SSRC there) and a frame counter.
	ivPrefix [4]byte
	counter  uint64
}

func newFrameCipher(key []byte, keyIndex uint8) (*frameCipher, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCMWithNonceSize(block, ivLength)
	if err != nil {
		return nil, err
	}
	c := &frameCipher{aead: aead, keyIndex: keyIndex}
	if _, err := rand.Read(c.ivPrefix[:]); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *frameCipher) nextIV() []byte {
	iv := make([]byte, ivLength)
	copy(iv, c.ivPrefix[:])
	binary.BigEndian.PutUint64(iv[4:], c.counter)
	c.counter++
	return iv
}

// encrypt returns the frame in LiveKit's encrypted form. Empty frames pass unchanged, as in
// the browser SDK (DTX).
func (c *frameCipher) encrypt(kind string, frame []byte) []byte {
	if len(frame) == 0 {
		return frame
	}
	n := clearBytes(kind, frame)
	header := frame[:n]
	iv := c.nextIV()
	out := make([]byte, 0, len(frame)+gcmTagLength+ivLength+trailerLength)
	out = append(out, header...)
	out = c.aead.Seal(out, iv, frame[n:], header)
	out = append(out, iv...)
	out = append(out, ivLength, c.keyIndex)
	return out
}

// errServerInjected marks a frame the SFU injected in clear (it ends with the SIF trailer the
// join response announced): not a decryption failure.
var errServerInjected = errors.New("server-injected frame")

// decrypt reverses encrypt, refusing anything that does not authenticate.
func (c *frameCipher) decrypt(kind string, data, sifTrailer []byte) ([]byte, error) {
	if len(sifTrailer) > 0 && bytes.HasSuffix(data, sifTrailer) {
		return nil, errServerInjected
	}
	n := clearBytes(kind, data)
	if len(data) < n+gcmTagLength+trailerLength {
		return nil, fmt.Errorf("frame of %d bytes is too short to be encrypted", len(data))
	}
	ivLen := int(data[len(data)-2])
	ivStart := len(data) - trailerLength - ivLen
	if ivLen != ivLength || ivStart < n+gcmTagLength {
		return nil, fmt.Errorf("trailer announces an IV of %d bytes", ivLen)
	}
	// A shared key sits at index 0 unless rotated; a frame under another index is not ours.
	if kid := data[len(data)-1]; kid != c.keyIndex {
		return nil, fmt.Errorf("frame uses key index %d, ours is %d", kid, c.keyIndex)
	}
	header := data[:n]
	plain, err := c.aead.Open(nil, data[ivStart:ivStart+ivLen], data[n:ivStart], header)
	if err != nil {
		return nil, err
	}
	return append(append(make([]byte, 0, n+len(plain)), header...), plain...), nil
}
