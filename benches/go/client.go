// A Go net/http load client for the poolscope comparison (benches/src/compare.rs runs it
// when `go` is installed). HTTP/1.1 always; h2c (-h2c) only when built with `-tags h2c`
// against golang.org/x/net (h2c.go), which the standard library does not include. It reads
// its settings from flags and prints one JSON line.
//
//	go run client.go -url http://127.0.0.1:PORT/ -c 64 -secs 2 [-max-conns-per-host 8]
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"sync"
	"time"
)

func main() {
	url := flag.String("url", "", "target URL (loopback)")
	c := flag.Int("c", 1, "concurrency")
	secs := flag.Float64("secs", 2, "seconds to run")
	maxConns := flag.Int("max-conns-per-host", 0, "MaxConnsPerHost (0: none)")
	h2c := flag.Bool("h2c", false, "HTTP/2 with prior knowledge (needs a build with -tags h2c)")
	flag.Parse()

	var rt http.RoundTripper = &http.Transport{MaxIdleConnsPerHost: 1024, MaxIdleConns: 1024, MaxConnsPerHost: *maxConns}
	if *h2c {
		if h2cTransport == nil {
			fmt.Fprintln(os.Stderr, "client: built without h2c support (-tags h2c)")
			os.Exit(2)
		}
		rt = h2cTransport()
	}
	client := &http.Client{Transport: rt}
	deadline := time.Now().Add(time.Duration(*secs * float64(time.Second)))
	var mu sync.Mutex
	var lat []time.Duration
	var failed int
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < *c; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var local []time.Duration
			fails := 0
			for time.Now().Before(deadline) {
				t0 := time.Now()
				resp, err := client.Get(*url)
				if err != nil {
					fails++
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				local = append(local, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, local...)
			failed += fails
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	q := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return lat[int(p*float64(len(lat)-1))].Seconds()
	}
	out, _ := json.Marshal(map[string]any{
		"requests": len(lat), "failed": failed, "elapsed": elapsed.Seconds(),
		"p50": q(0.5), "p99": q(0.99),
	})
	fmt.Println(string(out))
	if failed > 0 && len(lat) == 0 {
		os.Exit(1)
	}
}

// h2cTransport makes an HTTP/2 prior-knowledge transport; nil unless built with -tags h2c.
var h2cTransport func() http.RoundTripper
