//! A small answer cache: bounded entry count, FIFO eviction, TTLs honoured and counted down.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{RData, RecordType};

use crate::table::NameKey;

#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    name: Box<[u8]>,
    qtype: u16,
    qclass: u16,
}

impl CacheKey {
    pub fn of(query: &Query) -> Option<Self> {
        let name = NameKey::from_name(query.name())?;
        Some(CacheKey {
            name: Box::from(name.as_bytes()),
            qtype: query.query_type().into(),
            qclass: query.query_class().into(),
        })
    }
}

struct Entry {
    answer: Message,
    stored: Instant,
    ttl: Duration,
}

pub struct Cache {
    capacity: usize,
    max_ttl: u32,
    entries: HashMap<CacheKey, Entry>,
    order: VecDeque<CacheKey>,
}

impl Cache {
    pub fn new(capacity: usize, max_ttl: u32) -> Self {
        Cache {
            capacity,
            max_ttl,
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// A copy of the cached answer with TTLs reduced by its age, if still fresh.
    pub fn get(&mut self, key: &CacheKey, now: Instant) -> Option<Message> {
        let entry = self.entries.get(key)?;
        let age = now.saturating_duration_since(entry.stored);
        if age >= entry.ttl {
            self.entries.remove(key);
            return None;
        }
        let elapsed = u32::try_from(age.as_secs()).unwrap_or(u32::MAX);
        let mut answer = entry.answer.clone();
        for record in answer
            .answers
            .iter_mut()
            .chain(answer.authorities.iter_mut())
            .chain(answer.additionals.iter_mut())
        {
            record.ttl = record.ttl.saturating_sub(elapsed);
        }
        Some(answer)
    }

    /// Stores `answer` if it is cacheable: NOERROR with answers (lowest TTL), or a negative
    /// answer carrying an SOA (RFC 2308: min of its TTL and MINIMUM). Nothing else is kept.
    pub fn insert(&mut self, key: CacheKey, answer: &Message, now: Instant) {
        if self.capacity == 0 {
            return;
        }
        let Some(ttl) = cache_ttl(answer).map(|t| t.min(self.max_ttl)) else {
            return;
        };
        if ttl == 0 {
            return;
        }
        while self.entries.len() >= self.capacity {
            match self.order.pop_front() {
                Some(old) => {
                    self.entries.remove(&old);
                }
                None => break,
            }
        }
        let entry = Entry {
            answer: answer.clone(),
            stored: now,
            ttl: Duration::from_secs(u64::from(ttl)),
        };
        if self.entries.insert(key.clone(), entry).is_none() {
            self.order.push_back(key);
        }
        // `order` may hold keys whose entries expired and were removed; keep it bounded too.
        while self.order.len() > self.capacity.saturating_mul(2) {
            if let Some(old) = self.order.pop_front() {
                self.entries.remove(&old);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

fn cache_ttl(answer: &Message) -> Option<u32> {
    let rcode = answer.metadata.response_code;
    if answer.metadata.truncation {
        return None;
    }
    if rcode == ResponseCode::NoError && !answer.answers.is_empty() {
        return answer.answers.iter().map(|r| r.ttl).min();
    }
    if rcode != ResponseCode::NoError && rcode != ResponseCode::NXDomain {
        return None;
    }
    answer
        .authorities
        .iter()
        .filter(|r| r.record_type() == RecordType::SOA)
        .find_map(|r| match &r.data {
            RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
            _ => None,
        })
}
