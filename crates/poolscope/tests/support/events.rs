//! A ClientTrace that records event names (with a detail) in order.

use std::sync::{Arc, Mutex};

use poolscope::trace::{GotConnInfo, RequestDoneInfo};
use poolscope::ClientTrace;

#[derive(Clone, Default)]
pub struct TraceLog {
    pub names: Arc<Mutex<Vec<String>>>,
    pub got: Arc<Mutex<Vec<GotConnInfo>>>,
    pub done: Arc<Mutex<Vec<RequestDoneInfo>>>,
}

impl TraceLog {
    pub fn trace(&self) -> ClientTrace {
        macro_rules! push {
            ($name:expr) => {{
                let n = self.names.clone();
                move |_: &_| n.lock().unwrap().push($name.to_string())
            }};
        }
        let (got, done, names) = (self.got.clone(), self.done.clone(), self.names.clone());
        let names2 = self.names.clone();
        ClientTrace::builder()
            .on_get_conn(push!("get_conn"))
            .on_dns_start(push!("dns_start"))
            .on_dns_done(push!("dns_done"))
            .on_connect_start(push!("connect_start"))
            .on_connect_done(push!("connect_done"))
            .on_tls_handshake_start(push!("tls_handshake_start"))
            .on_tls_handshake_done(push!("tls_handshake_done"))
            .on_got_conn(move |i| {
                names.lock().unwrap().push("got_conn".into());
                got.lock().unwrap().push(i.clone());
            })
            .on_wrote_headers(push!("wrote_headers"))
            .on_wrote_request(push!("wrote_request"))
            .on_got_first_response_byte(push!("got_first_response_byte"))
            .on_got_1xx_response(push!("got_1xx_response"))
            .on_put_idle_conn(push!("put_idle_conn"))
            .on_response_body_done(push!("response_body_done"))
            .on_request_done(move |i| {
                names2.lock().unwrap().push("request_done".into());
                done.lock().unwrap().push(i.clone());
            })
            .build()
    }

    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.names.lock().unwrap())
    }

    pub fn got(&self) -> Vec<GotConnInfo> {
        self.got.lock().unwrap().clone()
    }
}
