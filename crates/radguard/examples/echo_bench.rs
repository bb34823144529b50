//! Measures C-ECHO association round trips in-process (no process start, no dictionary load):
//! N sequential associations, each A-ASSOCIATE-RQ → AC → C-ECHO-RQ → RSP → A-RELEASE.
//! Prints one JSON object with the median and percentiles in microseconds.
//!
//! `cargo run --release --example echo_bench -- HOST:PORT CALLING CALLED N`

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Instant;

use dicom_ul::pdu::{AssociationRQ, Pdu, PresentationContextProposed, UserVariableItem};
use radguard_dicom::dimse::{encode_request, Command};
use radguard_dicom::pdu::{encode, encode_pdata, pdvs, Pdv, RELEASE_RQ};
use radguard_dicom::types::uids;
use radguard_dicom::CommandField;

fn read_pdu(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = [0u8; 6];
    s.read_exact(&mut head)?;
    let len = u32::from_be_bytes([head[2], head[3], head[4], head[5]]) as usize;
    let mut buf = head.to_vec();
    buf.resize(6 + len, 0);
    s.read_exact(&mut buf[6..])?;
    Ok(buf)
}

fn one(addr: &str, rq: &[u8], echo: &[u8]) -> Result<(), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    s.write_all(rq).map_err(|e| e.to_string())?;
    let ac = read_pdu(&mut s).map_err(|e| e.to_string())?;
    if ac.first() != Some(&2) {
        return Err(format!("not accepted: PDU type {:?}", ac.first()));
    }
    s.write_all(echo).map_err(|e| e.to_string())?;
    let rsp = read_pdu(&mut s).map_err(|e| e.to_string())?;
    let items = pdvs(rsp.get(6..).unwrap_or(&[])).map_err(|e| e.to_string())?;
    let cmd =
        Command::decode(items.first().map(|p| p.data).unwrap_or(&[])).map_err(|e| e.to_string())?;
    if cmd.status != Some(0) {
        return Err(format!("echo status {:?}", cmd.status));
    }
    s.write_all(&RELEASE_RQ).map_err(|e| e.to_string())?;
    let rp = read_pdu(&mut s).map_err(|e| e.to_string())?;
    if rp.first() != Some(&6) {
        return Err("no A-RELEASE-RP".into());
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        eprintln!("usage: echo_bench HOST:PORT CALLING_AE CALLED_AE N");
        std::process::exit(2);
    }
    let (addr, calling, called) = (&args[1], &args[2], &args[3]);
    let n: usize = args[4].parse().unwrap_or(200);
    let rq = encode(&Pdu::AssociationRQ(AssociationRQ {
        protocol_version: 1,
        calling_ae_title: calling.clone(),
        called_ae_title: called.clone(),
        application_context_name: uids::APPLICATION_CONTEXT.into(),
        presentation_contexts: vec![PresentationContextProposed {
            id: 1,
            abstract_syntax: uids::VERIFICATION.into(),
            transfer_syntaxes: vec![uids::IMPLICIT_VR_LE.into()],
        }],
        user_variables: vec![
            UserVariableItem::MaxLength(16384),
            UserVariableItem::ImplementationClassUID(uids::IMPLEMENTATION_CLASS_UID.into()),
        ],
    }))
    .expect("encode RQ");
    let cmd = encode_request(CommandField::CEchoRq, 1, uids::VERIFICATION, None, false);
    let mut echo = Vec::new();
    encode_pdata(
        &mut echo,
        &[Pdv {
            context_id: 1,
            is_command: true,
            is_last: true,
            data: &cmd,
        }],
    );
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        if let Err(e) = one(addr, &rq, &echo) {
            eprintln!("echo_bench: {e}");
            std::process::exit(1);
        }
        times.push(t.elapsed().as_micros() as u64);
    }
    times.sort_unstable();
    let pct = |p: f64| times[((times.len() as f64 - 1.0) * p) as usize];
    println!(
        "{{\"n\":{n},\"median_us\":{},\"p10_us\":{},\"p90_us\":{},\"max_us\":{}}}",
        pct(0.5),
        pct(0.1),
        pct(0.9),
        times[times.len() - 1]
    );
}
