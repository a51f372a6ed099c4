//! Answers from the name table. Which records a name answers is documented in the crate README.

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::{A, PTR, SRV};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use crate::table::Records;

/// Fills `response` (answers, additionals) for `qtype` from `records`; empty = NODATA.
pub fn answer(
    response: &mut Message,
    qname: &Name,
    qtype: RecordType,
    records: &Records,
    ttl: u32,
    rotation: usize,
) {
    let wants = |t: RecordType| qtype == t || qtype == RecordType::ANY;
    if wants(RecordType::A) {
        let n = records.a.len();
        let start = if records.rotate && n > 0 {
            rotation % n
        } else {
            0
        };
        let rotated = records.a[start..].iter().chain(&records.a[..start]);
        for addr in rotated {
            response.add_answer(record(qname, ttl, RData::A(A(*addr))));
        }
    }
    if wants(RecordType::PTR) {
        for target in &records.ptr {
            response.add_answer(record(qname, ttl, RData::PTR(PTR(target.clone()))));
        }
    }
    if wants(RecordType::SRV) {
        for srv in &records.srv {
            let data = SRV::new(0, srv.weight, srv.port, srv.target.clone());
            response.add_answer(record(qname, ttl, RData::SRV(data)));
        }
        let mut glued: Vec<&Name> = Vec::new();
        for srv in &records.srv {
            if !glued.contains(&&srv.target) {
                glued.push(&srv.target);
                response.add_additional(record(&srv.target, ttl, RData::A(A(srv.addr))));
            }
        }
    }
    response.metadata.response_code = ResponseCode::NoError;
}

fn record(name: &Name, ttl: u32, data: RData) -> Record {
    let mut record = Record::from_rdata(name.clone(), ttl, data);
    record.dns_class = DNSClass::IN;
    record
}
