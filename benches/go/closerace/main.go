// closerace runs Go's net/http client (standard library only) in the same "close race"
// scenarios as poolscope's tests (crates/poolscope/tests/close_races.rs), so Go's behaviour
// can be compared with ours. It only talks to loopback (127.0.0.1, ::1, localhost) and
// prints exactly one JSON object on stdout; diagnostics go to stderr.
//
//	go run . -mode paced -url http://127.0.0.1:PORT -loops 50 -per-loop 100 -keepalive-ms 100
//	go run . -mode load -url https://localhost:PORT/ -cafile ca.pem -n 1000 -c 16 [-h2]
//	go run . -mode openloop -url https://localhost:PORT -cafile ca.pem -rate 300 -n 1200 [-post-every 4]
//
// Modes: paced runs `loops` goroutines, each with its own Client and Transport, each
// sending `per-loop` requests one after another and pausing before each (but the first)
// about the server's keep-alive timeout, so requests go out about when the server closes the
// idle connection; every fourth request is a POST with a one-byte body. load runs one shared
// Client, `c` goroutines sharing `n` GETs, and counts TCP dials. openloop runs one shared
// Client and starts request k at k/rate seconds after the start, each in its own goroutine,
// every `post-every`th a POST, and counts TCP dials.
//
// A request (including reading its body) gets 10 s; one that runs out of time counts as
// "hung", not as "failed" (as in the Rust tests). In load/openloop the transport sets
// ForceAttemptHTTP2 (unless -h2=false), so an https URL negotiates h2 by ALPN if the server
// offers it; an http URL is plain HTTP/1.1. Those two modes also report "dials_failed" (TCP
// dials that failed, e.g. cancelled with their request: the server may still have accepted
// them) and "protos" (how many responses came back over each protocol, e.g. "HTTP/2.0").
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// hungAfter is the per-request time limit; a request that exceeds it counts as hung.
const hungAfter = 10 * time.Second

// tally collects what a run saw. All methods are safe for concurrent use.
type tally struct {
	mu        sync.Mutex
	gets      int
	posts     int
	getFailed int
	postFail  int
	hung      int
	postsOK   int
	errCounts map[string]int
	protos    map[string]int
}

func newTally() *tally {
	return &tally{errCounts: map[string]int{}, protos: map[string]int{}}
}

// record notes the outcome of one request. proto is the response's protocol ("" if none).
func (t *tally) record(post bool, proto string, err error, hung bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if post {
		t.posts++
	} else {
		t.gets++
	}
	if proto != "" {
		t.protos[proto]++
	}
	switch {
	case hung:
		t.hung++
		t.errCounts[errorKey(err)]++
	case err != nil && post:
		t.postFail++
		t.errCounts[errorKey(err)]++
	case err != nil:
		t.getFailed++
		t.errCounts[errorKey(err)]++
	case post:
		t.postsOK++
	}
}

// Parts of error strings that differ from one request to the next (local ports, stream IDs),
// replaced so that equal errors are counted together.
var (
	localPort = regexp.MustCompile(`:\d+->`)
	streamID  = regexp.MustCompile(`stream ID \d+`)
)

// errorKey turns an error into a string under which equal errors are counted: a *url.Error
// ("Post \"http://…/post/3-7\": EOF") becomes "Post ...: EOF".
func errorKey(err error) string {
	if err == nil {
		return "hung (no error)"
	}
	var s string
	var ue *url.Error
	if errors.As(err, &ue) {
		s = fmt.Sprintf("%s ...: %v", ue.Op, ue.Err)
	} else {
		s = err.Error()
	}
	s = localPort.ReplaceAllString(s, ":*->")
	return streamID.ReplaceAllString(s, "stream ID N")
}

// topErrors returns up to 10 distinct error strings, most frequent first, as "N× error".
func (t *tally) topErrors() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	keys := make([]string, 0, len(t.errCounts))
	for k := range t.errCounts {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if t.errCounts[keys[i]] != t.errCounts[keys[j]] {
			return t.errCounts[keys[i]] > t.errCounts[keys[j]]
		}
		return keys[i] < keys[j]
	})
	out := []string{}
	for i, k := range keys {
		if i == 10 {
			break
		}
		out = append(out, fmt.Sprintf("%d× %s", t.errCounts[k], k))
	}
	return out
}

// do sends one request (a GET, or a POST with body "x") with a 10 s limit covering the
// response and reading the whole body. It returns the response protocol, the error if any,
// and whether the request ran out of time (hung).
func do(client *http.Client, post bool, target string) (proto string, err error, hung bool) {
	ctx, cancel := context.WithTimeout(context.Background(), hungAfter)
	defer cancel()
	var req *http.Request
	if post {
		// A *bytes.Reader body makes NewRequest set GetBody (so the body can be replayed).
		req, err = http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader([]byte("x")))
		if err == nil {
			req.Header.Set("Content-Type", "text/plain")
		}
	} else {
		req, err = http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	}
	if err != nil {
		return "", err, false
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", err, ctx.Err() != nil
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return resp.Proto, fmt.Errorf("read body: %w", err), ctx.Err() != nil
	}
	return resp.Proto, nil, false
}

// checkLoopback refuses any URL whose host is not loopback.
func checkLoopback(raw string) *url.URL {
	u, err := url.Parse(raw)
	if err != nil {
		fatalf("bad -url %q: %v", raw, err)
	}
	switch u.Hostname() {
	case "127.0.0.1", "localhost", "::1":
	default:
		fatalf("-url must be on loopback (127.0.0.1, ::1 or localhost), not %q", u.Hostname())
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		fatalf("-url must be http:// or https://, not %q", raw)
	}
	return u
}

// dialCounts counts the TCP dials of a shared client.
type dialCounts struct {
	ok atomic.Int64 // connected
	// failed, e.g. cancelled with the request that started the dial (Go dials with the
	// request's context): one cancelled just as the TCP handshake completed may still have
	// been accepted by the server, so on loopback ok <= server accepts <= ok + failed.
	failed atomic.Int64
}

// sharedClient builds the one client of load and openloop mode: Go's default transport
// settings, plus a dialer that counts TCP dials, and for https a TLS config that trusts
// only the CA in cafile.
func sharedClient(u *url.URL, cafile string, h2 bool, maxIdlePerHost int, dials *dialCounts) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	dialer := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dialer.DialContext(ctx, network, addr)
		if err == nil {
			dials.ok.Add(1)
		} else {
			dials.failed.Add(1)
			fmt.Fprintf(os.Stderr, "dial %s failed: %v\n", addr, err)
		}
		return c, err
	}
	if maxIdlePerHost > 0 {
		tr.MaxIdleConnsPerHost = maxIdlePerHost
	}
	// With a custom DialContext/TLSClientConfig, Go only tries h2 if ForceAttemptHTTP2 is set.
	tr.ForceAttemptHTTP2 = h2
	if !h2 {
		// An empty (non-nil) map switches HTTP/2 off for good.
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	if u.Scheme == "https" {
		if cafile == "" {
			fatalf("an https -url needs -cafile")
		}
		pem, err := os.ReadFile(cafile)
		if err != nil {
			fatalf("read -cafile: %v", err)
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			fatalf("no certificates in %s", cafile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: roots}
	}
	return &http.Client{Transport: tr}
}

func main() {
	mode := flag.String("mode", "", "paced, load or openloop")
	rawURL := flag.String("url", "", "base URL (loopback only)")
	// paced
	loops := flag.Int("loops", 50, "paced: goroutines, each with its own client")
	perLoop := flag.Int("per-loop", 100, "paced: requests per goroutine")
	keepaliveMS := flag.Float64("keepalive-ms", 100, "paced: the server's keep-alive timeout, ms")
	pauseFromUS := flag.Int("pause-from-us", -1, "paced: shortest pause, µs (default: keep-alive − 1.5 ms)")
	pauseWidthUS := flag.Int("pause-width-us", 2000, "paced: pauses spread from pause-from over this many µs")
	// load, openloop
	cafile := flag.String("cafile", "", "load/openloop: PEM CA to trust (https only)")
	h2 := flag.Bool("h2", true, "load/openloop: ForceAttemptHTTP2 (h2 by ALPN over https); -h2=false for HTTP/1.1 only")
	maxIdle := flag.Int("max-idle-per-host", 0, "load/openloop: Transport.MaxIdleConnsPerHost (0: Go's default, 2)")
	n := flag.Int("n", 1000, "load/openloop: total requests")
	c := flag.Int("c", 16, "load: concurrency")
	rate := flag.Float64("rate", 300, "openloop: requests started per second")
	postEvery := flag.Int("post-every", 0, "openloop: every Nth request is a POST (0: none)")
	flag.Parse()

	if *rawURL == "" {
		fatalf("-url is required")
	}
	u := checkLoopback(*rawURL)
	base := strings.TrimRight(*rawURL, "/")

	var out any
	switch *mode {
	case "paced":
		from := time.Duration(*keepaliveMS*float64(time.Millisecond)) - 1500*time.Microsecond
		if *pauseFromUS >= 0 {
			from = time.Duration(*pauseFromUS) * time.Microsecond
		}
		if from < 0 {
			from = 0
		}
		width := *pauseWidthUS
		if width < 1 {
			width = 1
		}
		out = paced(base, *loops, *perLoop, from, width)
	case "load":
		out = load(u, *rawURL, *cafile, *h2, *maxIdle, *n, *c)
	case "openloop":
		out = openloop(u, base, *cafile, *h2, *maxIdle, *n, *rate, *postEvery)
	default:
		fatalf("-mode must be paced, load or openloop, not %q", *mode)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetEscapeHTML(false) // print "->" in error strings as is, not as "\u003e"
	if err := enc.Encode(out); err != nil {
		fatalf("write JSON: %v", err)
	}
}

type pacedResult struct {
	Client     string   `json:"client"`
	Mode       string   `json:"mode"`
	Gets       int      `json:"gets"`
	Posts      int      `json:"posts"`
	GetFailed  int      `json:"get_failed"`
	PostFailed int      `json:"post_failed"`
	Hung       int      `json:"hung"`
	PostsOK    int      `json:"posts_ok"`
	Errors     []string `json:"errors"`
}

// paced: loops goroutines, each with its own Client and Transport (Go's defaults), each
// sending perLoop requests one after another; before each but the first it sleeps
// from + spread, spread = ((i*7919 + l*104729) % width) µs (by default from 1.5 ms under the
// keep-alive timeout to 0.5 ms over it), as tests/close_races.rs does. Request i of loop l is
// a POST to /post/l-i when i%4 == 3, else a GET to /get/l-i.
func paced(base string, loops, perLoop int, from time.Duration, width int) pacedResult {
	t := newTally()
	start := time.Now()
	var wg sync.WaitGroup
	for l := 0; l < loops; l++ {
		wg.Add(1)
		go func(l int) {
			defer wg.Done()
			tr := http.DefaultTransport.(*http.Transport).Clone()
			client := &http.Client{Transport: tr}
			defer tr.CloseIdleConnections()
			for i := 0; i < perLoop; i++ {
				if i > 0 {
					spread := time.Duration((i*7919+l*104729)%width) * time.Microsecond
					time.Sleep(from + spread)
				}
				post := i%4 == 3
				target := fmt.Sprintf("%s/get/%d-%d", base, l, i)
				if post {
					target = fmt.Sprintf("%s/post/%d-%d", base, l, i)
				}
				proto, err, hung := do(client, post, target)
				t.record(post, proto, err, hung)
			}
		}(l)
	}
	wg.Wait()
	fmt.Fprintf(os.Stderr, "paced: %d×%d requests in %v\n", loops, perLoop, time.Since(start).Round(time.Millisecond))
	return t.result("paced")
}

// result is the tally's figures for a run in mode.
func (t *tally) result(mode string) pacedResult {
	return pacedResult{
		Client: "go", Mode: mode,
		Gets: t.gets, Posts: t.posts, GetFailed: t.getFailed, PostFailed: t.postFail,
		Hung: t.hung, PostsOK: t.postsOK, Errors: t.topErrors(),
	}
}

type loadResult struct {
	Client   string         `json:"client"`
	Mode     string         `json:"mode"`
	Requests int            `json:"requests"`
	Failed   int            `json:"failed"`
	Hung     int            `json:"hung"`
	Dials    int64          `json:"dials"`
	DialsErr int64          `json:"dials_failed"`
	Protos   map[string]int `json:"protos"`
	Errors   []string       `json:"errors"`
}

// load: one shared client; c goroutines take GETs of target from a shared counter until n
// have been sent.
func load(u *url.URL, target, cafile string, h2 bool, maxIdle, n, c int) loadResult {
	var dials dialCounts
	client := sharedClient(u, cafile, h2, maxIdle, &dials)
	t := newTally()
	var next atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < c; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				proto, err, hung := do(client, false, target)
				t.record(false, proto, err, hung)
			}
		}()
	}
	wg.Wait()
	fmt.Fprintf(os.Stderr, "load: %d requests at c=%d in %v\n", n, c, time.Since(start).Round(time.Millisecond))
	return loadResult{
		Client: "go", Mode: "load",
		Requests: t.gets, Failed: t.getFailed, Hung: t.hung,
		Dials: dials.ok.Load(), DialsErr: dials.failed.Load(),
		Protos: t.protos, Errors: t.topErrors(),
	}
}

// openloopResult is a paced run's figures (encoding/json promotes the embedded fields) and
// the dials and protocols.
type openloopResult struct {
	pacedResult
	Dials    int64          `json:"dials"`
	DialsErr int64          `json:"dials_failed"`
	Protos   map[string]int `json:"protos"`
}

// openloop: request k starts k/rate seconds after the start, in its own goroutine, whether
// or not earlier ones have finished. It is a POST to /post/k when postEvery > 0 and
// k%postEvery == postEvery-1, else a GET to /get/k.
func openloop(u *url.URL, base, cafile string, h2 bool, maxIdle, n int, rate float64, postEvery int) openloopResult {
	if rate <= 0 {
		fatalf("-rate must be > 0")
	}
	var dials dialCounts
	client := sharedClient(u, cafile, h2, maxIdle, &dials)
	t := newTally()
	start := time.Now()
	var wg sync.WaitGroup
	for k := 0; k < n; k++ {
		due := start.Add(time.Duration(float64(k) / rate * float64(time.Second)))
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		post := postEvery > 0 && k%postEvery == postEvery-1
		target := fmt.Sprintf("%s/get/%d", base, k)
		if post {
			target = fmt.Sprintf("%s/post/%d", base, k)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			proto, err, hung := do(client, post, target)
			t.record(post, proto, err, hung)
		}()
	}
	sent := time.Since(start)
	wg.Wait()
	fmt.Fprintf(os.Stderr, "openloop: %d requests started in %v, all done in %v\n",
		n, sent.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	return openloopResult{
		pacedResult: t.result("openloop"),
		Dials:       dials.ok.Load(), DialsErr: dials.failed.Load(),
		Protos: t.protos,
	}
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "closerace: "+format+"\n", args...)
	os.Exit(2)
}
