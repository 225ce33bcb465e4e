//! One DNS query in, what to do with it out: a reply from the zone, or
//! "forward it upstream". Pure: the server does the I/O.
//!
//! - Names in the domain are ours: A, AAAA and ANY from the zone; any
//!   other type, or a type the name has no address of, is NODATA; a name
//!   not in the zone is NXDOMAIN; both carry the zone's SOA, so negative
//!   answers are cached for the zone's TTL and no longer.
//! - PTR for an address in the zone is ours; every other name is
//!   forwarded.
//! - A query that does not parse, or is not a query, is dropped (the
//!   server counts it): answering garbage would only help reflection.
//! - EDNS is answered with EDNS; an answer larger than the client can
//!   take over UDP (512 bytes, or its EDNS size up to `MAX_UDP_PAYLOAD`)
//!   goes back truncated, and the client asks again over TCP.

use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, PTR, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::in_domain;
use super::zone::Zone;

/// The largest UDP answer we send, whatever a client's EDNS says (the
/// DNS flag day 2020 figure: no fragmentation on any usual path).
pub const MAX_UDP_PAYLOAD: u16 = 1232;
/// Without EDNS (RFC 1035).
const PLAIN_UDP_PAYLOAD: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Send this back.
    Reply(Vec<u8>),
    /// Not ours: send the query, as it is, to the upstream resolvers.
    Forward,
}

/// Why a query was dropped unanswered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueryError {
    #[error("malformed DNS message: {0}")]
    Malformed(String),
    #[error("a DNS response, not a query")]
    NotAQuery,
    #[error("could not encode the answer: {0}")]
    Encode(String),
}

/// The answer to `query` from `zone`; `rotation` picks which address of a
/// name with several comes first (the server counts queries).
pub fn answer(
    query: &[u8],
    zone: &Zone,
    rotation: usize,
    transport: Transport,
) -> Result<Outcome, QueryError> {
    let q = Message::from_vec(query).map_err(|e| QueryError::Malformed(e.to_string()))?;
    if q.metadata.message_type != MessageType::Query {
        return Err(QueryError::NotAQuery);
    }
    let mut r = reply_to(&q);
    if q.metadata.op_code != OpCode::Query {
        r.metadata.response_code = ResponseCode::NotImp;
        return encode(&q, r, transport).map(Outcome::Reply);
    }
    let [question] = q.queries.as_slice() else {
        r.metadata.response_code = ResponseCode::FormErr;
        return encode(&q, r, transport).map(Outcome::Reply);
    };
    let asked = question.name();
    let name = asked.to_lowercase().to_ascii();
    let name = if name.ends_with('.') {
        name
    } else {
        name + "."
    };
    let qtype = question.query_type();
    let ttl = zone.ttl;
    if name == zone.domain {
        r.metadata.authoritative = true;
        if qtype == RecordType::SOA {
            r.answers.push(soa(zone)?);
        } else {
            r.authorities.push(soa(zone)?);
        }
        return encode(&q, r, transport).map(Outcome::Reply);
    }
    // A single label (`db`, as Docker's embedded resolver passes on a name
    // it does not know) is a name of the domain when the zone has it.
    let name = match name.strip_suffix('.') {
        Some(label) if !label.contains('.') && !label.is_empty() => {
            let full = format!("{label}.{}", zone.domain);
            if zone.lookup(&full).is_some() {
                full
            } else {
                name
            }
        }
        _ => name,
    };
    if in_domain(&name, &zone.domain) {
        r.metadata.authoritative = true;
        match zone.lookup(&name) {
            None => {
                r.metadata.response_code = ResponseCode::NXDomain;
                r.authorities.push(soa(zone)?);
            }
            Some(addrs) => {
                let wanted = |a: &&IpAddr| match qtype {
                    RecordType::A => a.is_ipv4(),
                    RecordType::AAAA => a.is_ipv6(),
                    RecordType::ANY => true,
                    _ => false,
                };
                let mut found: Vec<IpAddr> = addrs.iter().filter(wanted).copied().collect();
                if found.is_empty() {
                    r.authorities.push(soa(zone)?);
                } else {
                    let n = found.len();
                    found.rotate_left(rotation % n);
                    r.answers
                        .extend(found.into_iter().map(|a| address(asked.clone(), ttl, a)));
                }
            }
        }
        return encode(&q, r, transport).map(Outcome::Reply);
    }
    if qtype == RecordType::PTR {
        let names = match asked.parse_arpa_name() {
            Ok(net) if net.prefix_len() == net.max_prefix_len() => zone.names_of(&net.addr()),
            _ => &[],
        };
        if !names.is_empty() {
            r.metadata.authoritative = true;
            for n in names {
                let target = Name::from_ascii(n).map_err(|e| QueryError::Encode(e.to_string()))?;
                r.answers.push(Record::from_rdata(
                    asked.clone(),
                    ttl,
                    RData::PTR(PTR(target)),
                ));
            }
            return encode(&q, r, transport).map(Outcome::Reply);
        }
    }
    Ok(Outcome::Forward)
}

/// SERVFAIL for `query` (the upstream resolvers did not answer); None if
/// it does not parse as a query.
pub fn servfail(query: &[u8], transport: Transport) -> Option<Vec<u8>> {
    let q = Message::from_vec(query).ok()?;
    if q.metadata.message_type != MessageType::Query {
        return None;
    }
    let mut r = reply_to(&q);
    r.metadata.response_code = ResponseCode::ServFail;
    encode(&q, r, transport).ok()
}

/// A response header and question for `q`, with EDNS if it had EDNS.
fn reply_to(q: &Message) -> Message {
    let mut r = Message::response(q.metadata.id, q.metadata.op_code);
    r.metadata.recursion_desired = q.metadata.recursion_desired;
    r.metadata.recursion_available = true;
    r.metadata.checking_disabled = q.metadata.checking_disabled;
    // The question is echoed when there is one; an error about many
    // (FORMERR, NOTIMP) carries none, so it stays small.
    if q.queries.len() == 1 {
        r.queries = q.queries.clone();
    }
    if q.edns.is_some() {
        let mut e = Edns::new();
        e.set_max_payload(MAX_UDP_PAYLOAD);
        r.set_edns(e);
    }
    r
}

fn address(name: Name, ttl: u32, a: IpAddr) -> Record {
    let data = match a {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(name, ttl, data)
}

/// The zone's SOA: its TTL and minimum are the zone's TTL, the negative
/// caching time (RFC 2308).
fn soa(zone: &Zone) -> Result<Record, QueryError> {
    let bad = |e: hickory_proto::ProtoError| QueryError::Encode(e.to_string());
    let apex = Name::from_ascii(&zone.domain).map_err(bad)?;
    let admin = Name::from_ascii(format!("hostmaster.{}", zone.domain)).map_err(bad)?;
    let data = SOA::new(apex.clone(), admin, zone.serial, 3600, 600, 86400, zone.ttl);
    Ok(Record::from_rdata(apex, zone.ttl, RData::SOA(data)))
}

/// The encoded reply, truncated (question only, TC set) when it is larger
/// than the client takes over UDP.
fn encode(q: &Message, r: Message, transport: Transport) -> Result<Vec<u8>, QueryError> {
    let bytes = r.to_vec().map_err(|e| QueryError::Encode(e.to_string()))?;
    let limit = match (transport, &q.edns) {
        (Transport::Tcp, _) => usize::from(u16::MAX),
        (Transport::Udp, None) => PLAIN_UDP_PAYLOAD,
        (Transport::Udp, Some(e)) => usize::from(e.max_payload().clamp(512, MAX_UDP_PAYLOAD)),
    };
    if bytes.len() <= limit {
        return Ok(bytes);
    }
    let mut t = r.truncate();
    let bytes = t.to_vec().map_err(|e| QueryError::Encode(e.to_string()))?;
    if bytes.len() <= limit {
        return Ok(bytes);
    }
    // Even the question is too long for the client: the header alone.
    t.queries.clear();
    t.to_vec().map_err(|e| QueryError::Encode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;

    fn zone() -> Zone {
        let v4 = |s: &str| s.parse::<IpAddr>().unwrap();
        let mut recs = vec![
            ("db.weave.local.", v4("10.32.0.1")),
            ("web.weave.local.", v4("10.32.0.2")),
            ("web.weave.local.", v4("10.32.0.3")),
            ("six.weave.local.", v4("fd00::5")),
            ("six.weave.local.", v4("10.32.0.5")),
        ];
        let big: Vec<(String, IpAddr)> = (0..100u8)
            .map(|i| ("big.weave.local.".to_string(), IpAddr::from([10, 33, 0, i])))
            .chain(
                (0..40u8).map(|i| ("mid.weave.local.".to_string(), IpAddr::from([10, 34, 0, i]))),
            )
            .collect();
        recs.extend(big.iter().map(|(n, a)| (n.as_str(), *a)));
        Zone::build("weave.local.", 1, 3, recs)
    }

    fn query(name: &str, t: RecordType, edns: bool) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = 4242;
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        if edns {
            let mut e = Edns::new();
            e.set_max_payload(4096);
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }

    fn ask(name: &str, t: RecordType) -> Message {
        ask_with(name, t, false, Transport::Udp, 0)
    }

    fn ask_with(name: &str, t: RecordType, edns: bool, tr: Transport, rot: usize) -> Message {
        match answer(&query(name, t, edns), &zone(), rot, tr).unwrap() {
            Outcome::Reply(b) => Message::from_vec(&b).unwrap(),
            Outcome::Forward => panic!("{name} was forwarded"),
        }
    }

    fn data(m: &Message) -> Vec<String> {
        m.answers.iter().map(|r| r.data.to_string()).collect()
    }

    #[test]
    fn answers_a_local_name_whatever_its_case() {
        let m = ask("DB.Weave.Local.", RecordType::A);
        assert_eq!(m.metadata.id, 4242);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.metadata.authoritative && m.metadata.recursion_available);
        assert_eq!(data(&m), ["10.32.0.1"]);
        assert_eq!(m.answers[0].name.to_ascii(), "DB.Weave.Local.");
        assert_eq!(m.answers[0].ttl, 1);
    }

    #[test]
    fn a_single_label_is_a_name_of_the_domain_when_the_zone_has_it() {
        let m = ask("db.", RecordType::A);
        assert_eq!(data(&m), ["10.32.0.1"]);
        assert_eq!(m.answers[0].name.to_ascii(), "db.");
        assert_eq!(ask("DB.", RecordType::AAAA).answers.len(), 0, "NODATA");
        let other = query("nope.", RecordType::A, false);
        assert_eq!(
            answer(&other, &zone(), 0, Transport::Udp),
            Ok(Outcome::Forward)
        );
    }

    #[test]
    fn rotates_the_addresses_of_a_name() {
        let first = data(&ask_with(
            "web.weave.local.",
            RecordType::A,
            false,
            Transport::Udp,
            0,
        ));
        let second = data(&ask_with(
            "web.weave.local.",
            RecordType::A,
            false,
            Transport::Udp,
            1,
        ));
        assert_eq!(first, ["10.32.0.2", "10.32.0.3"]);
        assert_eq!(second, ["10.32.0.3", "10.32.0.2"]);
    }

    #[test]
    fn aaaa_and_nodata() {
        assert_eq!(
            data(&ask("six.weave.local.", RecordType::AAAA)),
            ["fd00::5"]
        );
        let m = ask("db.weave.local.", RecordType::AAAA);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty());
        assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
        let m = ask("db.weave.local.", RecordType::MX);
        assert!(m.answers.is_empty() && m.authorities.len() == 1);
        assert_eq!(ask("six.weave.local.", RecordType::ANY).answers.len(), 2);
    }

    #[test]
    fn nxdomain_carries_the_soa() {
        let m = ask("nope.weave.local.", RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        let soa = &m.authorities[0];
        assert_eq!(soa.name.to_ascii(), "weave.local.");
        match &soa.data {
            RData::SOA(s) => assert_eq!((s.minimum, s.serial), (1, 3)),
            other => panic!("{other:?}"),
        }
        let apex = ask("weave.local.", RecordType::SOA);
        assert_eq!(apex.answers[0].record_type(), RecordType::SOA);
    }

    #[test]
    fn ptr_for_our_addresses_else_forwarded() {
        let m = ask("1.0.32.10.in-addr.arpa.", RecordType::PTR);
        assert_eq!(data(&m), ["db.weave.local."]);
        let six = ask(
            "5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.",
            RecordType::PTR,
        );
        assert_eq!(data(&six), ["six.weave.local."]);
        let other = query("9.9.9.9.in-addr.arpa.", RecordType::PTR, false);
        assert_eq!(
            answer(&other, &zone(), 0, Transport::Udp),
            Ok(Outcome::Forward)
        );
        let other = query("example.com.", RecordType::A, false);
        assert_eq!(
            answer(&other, &zone(), 0, Transport::Udp),
            Ok(Outcome::Forward)
        );
    }

    #[test]
    fn large_answers_are_truncated_over_udp_only() {
        let m = ask_with("big.weave.local.", RecordType::A, false, Transport::Udp, 0);
        assert!(m.metadata.truncation && m.answers.is_empty());
        // 100 A records are over 1,232 bytes: truncated even with EDNS.
        let m = ask_with("big.weave.local.", RecordType::A, true, Transport::Udp, 0);
        assert!(m.metadata.truncation && m.edns.is_some());
        // 40 (about 700 bytes) need EDNS over UDP.
        let m = ask_with("mid.weave.local.", RecordType::A, false, Transport::Udp, 0);
        assert!(m.metadata.truncation);
        let m = ask_with("mid.weave.local.", RecordType::A, true, Transport::Udp, 0);
        assert!(!m.metadata.truncation && m.answers.len() == 40);
        let m = ask_with("big.weave.local.", RecordType::A, false, Transport::Tcp, 0);
        assert_eq!(m.answers.len(), 100);
    }

    #[test]
    fn garbage_and_responses_are_dropped() {
        let z = zone();
        assert!(matches!(
            answer(b"\x01\x02garbage", &z, 0, Transport::Udp),
            Err(QueryError::Malformed(_))
        ));
        assert!(matches!(
            answer(&[], &z, 0, Transport::Udp),
            Err(QueryError::Malformed(_))
        ));
        let mut resp = Message::from_vec(&query("db.weave.local.", RecordType::A, false)).unwrap();
        resp.metadata.message_type = MessageType::Response;
        assert_eq!(
            answer(&resp.to_vec().unwrap(), &z, 0, Transport::Udp),
            Err(QueryError::NotAQuery)
        );
        let mut two = Message::from_vec(&query("db.weave.local.", RecordType::A, false)).unwrap();
        two.add_query(Query::query(
            Name::from_ascii("web.weave.local.").unwrap(),
            RecordType::A,
        ));
        match answer(&two.to_vec().unwrap(), &z, 0, Transport::Udp).unwrap() {
            Outcome::Reply(b) => assert_eq!(
                Message::from_vec(&b).unwrap().metadata.response_code,
                ResponseCode::FormErr
            ),
            Outcome::Forward => panic!("forwarded"),
        }
    }

    #[test]
    fn errors_about_many_questions_stay_small() {
        // Found by the dns_query fuzz target: a FORMERR echoing dozens of
        // long questions was larger than any UDP client takes.
        let mut m = Message::query();
        for i in 0..40 {
            let long = format!("{}{i}.example.com.", "x".repeat(60));
            m.add_query(Query::query(
                Name::from_ascii(&long).unwrap(),
                RecordType::A,
            ));
        }
        for op in [OpCode::Query, OpCode::Status] {
            m.metadata.op_code = op;
            match answer(&m.to_vec().unwrap(), &zone(), 0, Transport::Udp).unwrap() {
                Outcome::Reply(b) => {
                    assert!(b.len() <= PLAIN_UDP_PAYLOAD, "{op:?}: {} bytes", b.len());
                    assert!(Message::from_vec(&b).unwrap().queries.is_empty());
                }
                Outcome::Forward => panic!("forwarded"),
            }
        }
    }

    #[test]
    fn servfail_echoes_the_question() {
        let b = servfail(&query("example.com.", RecordType::A, true), Transport::Udp).unwrap();
        let m = Message::from_vec(&b).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
        assert_eq!(m.queries.len(), 1);
        assert!(servfail(b"junk", Transport::Udp).is_none());
    }
}
