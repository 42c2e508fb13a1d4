package main

// selftest checks this client's E2EE against LiveKit's own Go SDK at run time: the same key
// from the same passphrase, and Opus frames each side encrypts that the other decrypts. The
// SDK has no VP8 frame helpers, so VP8 frames are checked for the layout the browser SDK reads
// (clear header, trailer) and opened with AES-GCM directly under the SDK's key.

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"fmt"

	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/livekit/server-sdk-go/v2/e2ee"
)

type check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail,omitempty"`
}

func runSelftest() int {
	var checks []check
	add := func(name string, err error) {
		c := check{Name: name, OK: err == nil}
		if err != nil {
			c.Detail = err.Error()
		}
		checks = append(checks, c)
	}
	// A Conclave Meeting key is 32 random bytes written base64url (43 characters).
	passphrases := []string{"12345", "E8uXxFh6C0d0ZbXvcSxq1R0mAaG2Xz7u9Q2Lr8mFqkM", "pässwörd ✓"}
	for _, p := range passphrases {
		add(fmt.Sprintf("key for %q matches lksdk.DeriveKeyFromString", p), sameKey(p))
	}
	// Each side derives its own key from the passphrase, so these check derivation too.
	add("Opus frames this client encrypts open with lksdk.DecryptGCMAudioSample", opusToSDK(passphrases[1]))
	add("Opus frames lksdk.EncryptGCMAudioSample seals open here", opusFromSDK(passphrases[1]))
	key, err := deriveKey(passphrases[1])
	if err != nil {
		add("derive key", err)
		return reportSelftest(checks)
	}
	add("VP8 frames keep the browser SDK's layout and open under the SDK's key", vp8Layout())
	add("every synthetic frame survives encrypt, decrypt and verify", roundTrips(key))
	add("a frame under another key is refused", refusesOtherKey(key))
	add("a changed clear header is refused (it is authenticated)", refusesTamperedHeader(key))
	add("a server-injected frame is recognised by its trailer", recognisesSIF(key))
	return reportSelftest(checks)
}

func reportSelftest(checks []check) int {
	failed := 0
	for _, c := range checks {
		if !c.OK {
			failed++
		}
	}
	out.emit(map[string]any{"event": "selftest", "checks": checks, "passed": len(checks) - failed, "failed": failed})
	if failed > 0 {
		return exitInternal
	}
	return exitOK
}

func sameKey(passphrase string) error {
	ours, err := deriveKey(passphrase)
	if err != nil {
		return err
	}
	theirs, err := lksdk.DeriveKeyFromString(passphrase)
	if err != nil {
		return err
	}
	kp := e2ee.NewExternalKeyProvider()
	if err := kp.SetKeyFromPassphrase(passphrase, 0); err != nil {
		return err
	}
	provider, err := kp.GetKey(0)
	if err != nil {
		return err
	}
	if !bytes.Equal(ours, theirs) || !bytes.Equal(ours, provider) {
		return fmt.Errorf("ours %x, DeriveKeyFromString %x, ExternalKeyProvider %x", ours, theirs, provider)
	}
	return nil
}

func opusToSDK(passphrase string) error {
	ours, err := deriveKey(passphrase)
	if err != nil {
		return err
	}
	key, err := lksdk.DeriveKeyFromString(passphrase)
	if err != nil {
		return err
	}
	c, err := newFrameCipher(ours, 0)
	if err != nil {
		return err
	}
	for seq := uint32(0); seq < 50; seq++ {
		plain := makeFrame(frameKindAudio, seq, false)
		got, err := lksdk.DecryptGCMAudioSample(c.encrypt(frameKindAudio, plain), key, nil)
		if err != nil {
			return fmt.Errorf("frame %d: %w", seq, err)
		}
		if !bytes.Equal(got, plain) {
			return fmt.Errorf("frame %d decrypts to other bytes", seq)
		}
	}
	return nil
}

func opusFromSDK(passphrase string) error {
	ours, err := deriveKey(passphrase)
	if err != nil {
		return err
	}
	key, err := lksdk.DeriveKeyFromString(passphrase)
	if err != nil {
		return err
	}
	c, err := newFrameCipher(ours, 0)
	if err != nil {
		return err
	}
	for seq := uint32(0); seq < 50; seq++ {
		plain := makeFrame(frameKindAudio, seq, false)
		sealed, err := lksdk.EncryptGCMAudioSample(plain, key, 0)
		if err != nil {
			return err
		}
		got, err := c.decrypt(frameKindAudio, sealed, nil)
		if err != nil {
			return fmt.Errorf("frame %d: %w", seq, err)
		}
		if _, err := verifyFrame(frameKindAudio, got); err != nil {
			return err
		}
	}
	return nil
}

func vp8Layout() error {
	sdkKey, err := lksdk.DeriveKeyFromString("12345")
	if err != nil {
		return err
	}
	c, err := newFrameCipher(sdkKey, 3)
	if err != nil {
		return err
	}
	block, err := aes.NewCipher(sdkKey)
	if err != nil {
		return err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return err
	}
	for _, tc := range []struct {
		key   bool
		clear int
	}{{true, 10}, {false, 3}} {
		plain := makeFrame(frameKindVideo, 7, tc.key)
		sealed := c.encrypt(frameKindVideo, plain)
		if len(sealed) != len(plain)+16+12+2 {
			return fmt.Errorf("key=%v: %d bytes sealed from %d", tc.key, len(sealed), len(plain))
		}
		if !bytes.Equal(sealed[:tc.clear], plain[:tc.clear]) {
			return fmt.Errorf("key=%v: the first %d bytes are not in clear", tc.key, tc.clear)
		}
		if t := sealed[len(sealed)-2:]; t[0] != 12 || t[1] != 3 {
			return fmt.Errorf("key=%v: trailer %v, want [12 3]", tc.key, t)
		}
		iv := sealed[len(sealed)-14 : len(sealed)-2]
		body, err := gcm.Open(nil, iv, sealed[tc.clear:len(sealed)-14], plain[:tc.clear])
		if err != nil {
			return fmt.Errorf("key=%v: %w", tc.key, err)
		}
		if !bytes.Equal(body, plain[tc.clear:]) {
			return fmt.Errorf("key=%v: opens to other bytes", tc.key)
		}
	}
	return nil
}

func roundTrips(key []byte) error {
	enc, err := newFrameCipher(key, 0)
	if err != nil {
		return err
	}
	dec, err := newFrameCipher(key, 0)
	if err != nil {
		return err
	}
	for _, kind := range []string{frameKindAudio, frameKindVideo} {
		for seq := uint32(0); seq < 300; seq++ {
			plain := makeFrame(kind, seq, kind == frameKindVideo && seq%7 == 0)
			if got, err := verifyFrame(kind, plain); err != nil || got != seq {
				return fmt.Errorf("%s frame %d does not verify in clear: %v", kind, seq, err)
			}
			opened, err := dec.decrypt(kind, enc.encrypt(kind, plain), []byte("LKROCKS!"))
			if err != nil {
				return fmt.Errorf("%s frame %d: %w", kind, seq, err)
			}
			if got, err := verifyFrame(kind, opened); err != nil || got != seq {
				return fmt.Errorf("%s frame %d after decryption: %v", kind, seq, err)
			}
		}
	}
	return nil
}

func refusesOtherKey(key []byte) error {
	other, err := deriveKey("another passphrase")
	if err != nil {
		return err
	}
	enc, _ := newFrameCipher(key, 0)
	dec, _ := newFrameCipher(other, 0)
	if _, err := dec.decrypt(frameKindVideo, enc.encrypt(frameKindVideo, makeFrame(frameKindVideo, 1, true)), nil); err == nil {
		return fmt.Errorf("decrypted under another key")
	}
	return nil
}

func refusesTamperedHeader(key []byte) error {
	c, _ := newFrameCipher(key, 0)
	sealed := c.encrypt(frameKindVideo, makeFrame(frameKindVideo, 1, true))
	sealed[7] ^= 0x01 // a dimension byte: clear, but authenticated
	if _, err := c.decrypt(frameKindVideo, sealed, nil); err == nil {
		return fmt.Errorf("a tampered header decrypted")
	}
	return nil
}

func recognisesSIF(key []byte) error {
	c, _ := newFrameCipher(key, 0)
	sif := []byte("LKROCKS!")
	frame := append(makeFrame(frameKindAudio, 1, false), sif...)
	if _, err := c.decrypt(frameKindAudio, frame, sif); err != errServerInjected {
		return fmt.Errorf("got %v", err)
	}
	return nil
}
