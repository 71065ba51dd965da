//! The slot rule simulated (owners taking slots until refused), and the
//! counters of sessions in progress.

use std::net::{IpAddr, Ipv4Addr};

use super::*;

/// Slots of each owner after they take slots in turn, one each per round,
/// until every one is refused (the worst case for a latecomer: nobody
/// ever gives a slot back).
fn fill(limits: SlotLimits, owners: usize) -> Vec<usize> {
    let mut held = vec![0usize; owners];
    loop {
        let mut progress = false;
        for owner in 0..owners {
            let used = SlotUse {
                open: held.iter().sum(),
                owners: held.iter().filter(|h| **h > 0).count(),
                held: held[owner],
            };
            if may_take_slot(limits, used).is_ok() {
                held[owner] += 1;
                progress = true;
            }
        }
        if !progress {
            return held;
        }
    }
}

/// One more owner's slots once `held` is as `fill` left it.
fn newcomer_slots(limits: SlotLimits, held: &[usize]) -> usize {
    let mut mine = 0;
    loop {
        let used = SlotUse {
            open: held.iter().sum::<usize>() + mine,
            owners: held.iter().filter(|h| **h > 0).count() + usize::from(mine > 0),
            held: mine,
        };
        if may_take_slot(limits, used).is_err() {
            return mine;
        }
        mine += 1;
    }
}

/// The case: 16 owners with 16 sessions each filled all 256
/// slots. Now they stop short, and a 17th owner gets slots.
#[test]
fn sixteen_greedy_owners_leave_room_for_a_seventeenth() {
    let limits = SlotLimits {
        max_sessions: 256,
        max_per_owner: 16,
    };
    let held = fill(limits, 16);
    let open: usize = held.iter().sum();
    assert!(open < 256, "{held:?}");
    assert!(held.iter().all(|h| *h >= 15), "{held:?}");
    let newcomer = newcomer_slots(limits, &held);
    assert!(newcomer >= 1, "a 17th owner is locked out: {held:?}");
    // It gets its fair share among 17 (256 / 18 = 14).
    assert!(newcomer >= fair_share(256, 17), "{newcomer}");
}

#[test]
fn an_owner_alone_gets_all_but_the_reserve_and_a_newcomer_gets_it() {
    let limits = SlotLimits {
        max_sessions: 8,
        max_per_owner: 8,
    };
    let held = fill(limits, 1);
    assert_eq!(held, vec![8 - reserved_slots(8)]);
    assert_eq!(newcomer_slots(limits, &held), 1);
    // Full now. When the first owner's session ends, the freed slot is
    // not the first owner's to take back (it holds more than its share),
    // the newcomer's is.
    let used = |open, held| SlotUse {
        open,
        owners: 2,
        held,
    };
    assert_eq!(
        may_take_slot(limits, used(7, 6)),
        Err(SlotRefused::FairShare)
    );
    assert_eq!(may_take_slot(limits, used(7, 1)), Ok(()));
}

#[test]
fn caps_still_apply() {
    let limits = SlotLimits {
        max_sessions: 256,
        max_per_owner: 16,
    };
    let used = |open, owners, held| SlotUse { open, owners, held };
    assert_eq!(
        may_take_slot(limits, used(256, 17, 0)),
        Err(SlotRefused::ServerFull)
    );
    assert_eq!(
        may_take_slot(limits, used(16, 1, 16)),
        Err(SlotRefused::OwnerFull)
    );
    // Far from full, the share does not matter.
    assert_eq!(may_take_slot(limits, used(100, 10, 15)), Ok(()));
    assert_eq!(fill(limits, 1), vec![16]);
}

const IP: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const OTHER_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

fn admission(per_owner: usize, per_ip: usize) -> Admission {
    Admission::new(AdmissionLimits {
        max_half_open_per_owner: per_owner,
        max_half_open_per_ip: per_ip,
        max_upgrades_per_ip: 2,
        ..AdmissionLimits::default()
    })
}

#[test]
fn half_open_limits_per_owner_and_per_ip() {
    let admission = admission(2, 3);
    let a1 = admission.enter("a", Some(IP), Tracked::Keygen).unwrap();
    assert_eq!(a1.1, 0);
    // A refresh counts too.
    let a2 = admission.enter("a", Some(IP), Tracked::Refresh).unwrap();
    assert_eq!(
        admission.enter("a", Some(IP), Tracked::Keygen).unwrap_err(),
        "keygens_in_progress_owner"
    );
    // Presigns are not keygen-class: counted for the quota, not limited.
    let presigns: Vec<_> = (0..5)
        .map(|_| admission.enter("a", Some(IP), Tracked::Presign).unwrap())
        .collect();
    assert_eq!(presigns[4].1, 4);
    let b = admission.enter("b", Some(IP), Tracked::Keygen).unwrap();
    assert_eq!(
        admission.enter("c", Some(IP), Tracked::Keygen).unwrap_err(),
        "keygens_in_progress_ip"
    );
    let c = admission
        .enter("c", Some(OTHER_IP), Tracked::Keygen)
        .unwrap();
    // An unknown address (an embedding without connect info) is held to
    // the owner's limit only.
    let d = admission.enter("d", None, Tracked::Keygen).unwrap();
    drop(a1);
    let a3 = admission.enter("a", Some(IP), Tracked::Keygen).unwrap();
    assert_eq!(a3.1, 0, "the earlier keygen ended");
    drop((a2, a3, b, c, d, presigns));
    let counters = lock(&admission.counters);
    assert!(counters.owners.is_empty() && counters.half_open_by_ip.is_empty());
}

#[test]
fn upgrades_per_ip() {
    let admission = admission(2, 3);
    let metrics = crate::rest::metrics::Metrics::new();
    let first = admission.open_upgrade(&metrics, IP).unwrap();
    let _second = admission.open_upgrade(&metrics, IP).unwrap();
    assert!(admission.open_upgrade(&metrics, IP).is_none());
    let _other = admission.open_upgrade(&metrics, OTHER_IP).unwrap();
    drop(first);
    let _third = admission.open_upgrade(&metrics, IP).unwrap();
    assert!(metrics
        .render()
        .contains("mpc_admission_refusals_total{reason=\"upgrades_per_ip\"} 1"));
}

/// Once its key is stored, a session no longer counts as in progress (the
/// store counts it): the owner's next opening sees no earlier keygen, while
/// the session itself runs on until its closing handshake ends. Outside an
/// admitted session, `stored` does nothing.
#[tokio::test]
async fn a_stored_unit_stops_counting_as_in_progress() {
    let admission = admission(1, 8);
    stored();
    let (ticket, earlier) = admission.enter("a", Some(IP), Tracked::Keygen).unwrap();
    assert_eq!(earlier, 0);
    TICKET
        .scope(RefCell::new(Some(ticket)), async {
            assert_eq!(
                admission.enter("a", Some(IP), Tracked::Keygen).unwrap_err(),
                "keygens_in_progress_owner"
            );
            stored();
            let (next, earlier) = admission.enter("a", Some(IP), Tracked::Keygen).unwrap();
            assert_eq!(earlier, 0, "the stored keygen still counted");
            drop(next);
        })
        .await;
    let counters = lock(&admission.counters);
    assert!(counters.owners.is_empty() && counters.half_open_by_ip.is_empty());
}
