//! `tcp_info` on real sockets over loopback.
#![cfg(target_os = "linux")]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};

#[test]
fn an_established_connection_reports_rtt_and_the_bytes_it_moved() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (mut server, _) = listener.accept().unwrap();
    let before = tcp_info::tcp_info(&client).unwrap();
    assert_eq!(before.state, tcp_info::TCP_ESTABLISHED);

    let chunk = vec![7u8; 64 * 1024];
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0;
        while got < 1024 * 1024 {
            got += server.read(&mut buf).unwrap();
        }
        server.write_all(b"done").unwrap();
        got
    });
    for _ in 0..16 {
        client.write_all(&chunk).unwrap();
    }
    let mut done = [0u8; 4];
    client.read_exact(&mut done).unwrap();
    assert_eq!(reader.join().unwrap(), 1024 * 1024);

    let after = tcp_info::tcp_info(&client).unwrap();
    assert!(after.rtt_us > 0, "{after:?}");
    assert_eq!(after.total_retrans, 0, "{after:?}");
    let acked = after.bytes_acked.unwrap() - before.bytes_acked.unwrap();
    assert!(acked >= 1024 * 1024, "acked {acked}: {after:?}");
    assert!(after.bytes_received.unwrap() >= 4, "{after:?}");
    assert!(after.snd_cwnd > 0 && after.snd_mss > 0, "{after:?}");
}

#[test]
fn a_socket_that_is_not_tcp_is_an_error() {
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let err = tcp_info::tcp_info(&udp).unwrap_err();
    assert!(err.raw_os_error().is_some(), "{err}");
}

#[test]
fn a_closed_connection_reports_its_state() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    drop(server);
    // The peer's FIN arrives: CLOSE_WAIT (8).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let info = tcp_info::tcp_info(&client).unwrap();
        if info.state == 8 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{info:?}");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}
