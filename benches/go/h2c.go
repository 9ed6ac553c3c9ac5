//go:build h2c

// The h2c transport of the Go comparison client: golang.org/x/net/http2 with AllowHTTP and
// a plain TCP dial, which is how Go speaks HTTP/2 with prior knowledge. Built only with
// `-tags h2c` where golang.org/x/net is available (Debian: golang-golang-x-net-dev).
package main

import (
	"crypto/tls"
	"net"
	"net/http"

	"golang.org/x/net/http2"
)

func init() {
	h2cTransport = func() http.RoundTripper {
		return &http2.Transport{
			AllowHTTP: true,
			DialTLS: func(network, addr string, _ *tls.Config) (net.Conn, error) {
				return net.Dial(network, addr)
			},
		}
	}
}
