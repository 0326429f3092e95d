//! An echo function speaking the Lambda Runtime API (2018-06-01) with only `std`: it answers
//! each event with the event itself. Errors end the process; the platform reports the exit.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// One HTTP/1.1 response: status, the request id header if any, and the body.
struct Answer {
    status: u16,
    request_id: Option<String>,
    body: Vec<u8>,
}

fn read_answer(reader: &mut BufReader<TcpStream>) -> Result<Answer> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("bad status line")?;
    let (mut length, mut request_id) = (0usize, None);
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse()?;
            } else if name.eq_ignore_ascii_case("lambda-runtime-aws-request-id") {
                request_id = Some(value.to_owned());
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(Answer {
        status,
        request_id,
        body,
    })
}

fn main() -> Result<()> {
    let api = std::env::var("AWS_LAMBDA_RUNTIME_API")?;
    let stream = TcpStream::connect(&api)?;
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    // One write per request: `write!` on the socket itself would send each formatted piece as
    // its own segment (the socket has no delay), waking the server once per piece.
    let next = format!("GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: {api}\r\n\r\n");
    loop {
        writer.write_all(next.as_bytes())?;
        let event = read_answer(&mut reader)?;
        let id = event.request_id.ok_or("no request id")?;
        let mut request = format!(
            "POST /2018-06-01/runtime/invocation/{id}/response HTTP/1.1\r\nHost: {api}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            event.body.len()
        )
        .into_bytes();
        request.extend_from_slice(&event.body);
        writer.write_all(&request)?;
        let accepted = read_answer(&mut reader)?;
        if accepted.status != 202 {
            return Err(format!("response refused: {}", accepted.status).into());
        }
    }
}
