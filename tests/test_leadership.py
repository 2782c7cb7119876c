"""Leadership among controller replicas through the registry: one leader, a fencing token that
goes up with every claim, and a stale leader that can commit nothing."""
import time

import pytest

from edgefleet.controller.errors import LeadershipLost
from edgefleet.controller.fleet.leadership import FencedRegistry, Leadership
from edgefleet.controller.store import open_registry


def test_one_leader_at_a_time_and_the_token_goes_up(registry_location):
    a_db, b_db = open_registry(registry_location), open_registry(registry_location)
    a, b = Leadership("a", ttl_s=0.5), Leadership("b", ttl_s=0.5)
    assert a.claim(a_db) and a.token == 1
    assert not b.claim(b_db) and not b.leading
    a.renew(a_db)
    assert not b.claim(b_db)
    assert a_db.leadership()["holder"] == "a"
    time.sleep(0.7)    # a's lease runs out
    assert b.claim(b_db) and b.token == 2
    with pytest.raises(LeadershipLost, match="fencing token 1 is stale"):
        a.renew(a_db)
    assert not a.leading and b_db.leadership()["holder"] == "b"
    a_db.close()
    b_db.close()


def test_a_stale_leader_commits_nothing(registry_location):
    """a led, stood still past its lease (paused, cut off); b took over. a's next transaction -
    a placement, say - is rolled back at its commit, and b's decisions stand."""
    a_db, b_db = open_registry(registry_location), open_registry(registry_location)
    a, b = Leadership("a", ttl_s=0.3), Leadership("b", ttl_s=30)
    assert a.claim(a_db)
    a_fenced = FencedRegistry(a_db, a)
    a_fenced.place("w", "node-a")
    a_fenced.commit()    # still its lease: the placement is made
    time.sleep(0.5)
    assert b.claim(b_db)
    b_fenced = FencedRegistry(b_db, b)
    b_fenced.place("w", "node-b")
    b_fenced.commit()
    a_fenced.unplace("w", "node-a")
    a_fenced.place("w", "node-c")
    with pytest.raises(LeadershipLost):
        a_fenced.commit()
    assert sorted(b_db.placements()) == [("w", "node-a"), ("w", "node-b")]
    assert sorted(a_db.placements()) == [("w", "node-a"), ("w", "node-b")]
    a_db.close()
    b_db.close()


def test_a_claim_waits_for_the_leaders_transaction_and_then_finds_it_renewed(postgres_url):
    """PostgreSQL: between the leader's check and its commit no claim can slip in, even one made
    after the lease's expiry time passed meanwhile."""
    import threading
    a_db, b_db = open_registry(postgres_url), open_registry(postgres_url)
    a, b = Leadership("a", ttl_s=0.3), Leadership("b", ttl_s=30)
    assert a.claim(a_db)
    a_fenced = FencedRegistry(a_db, a)
    a.check(a_db)          # the leader's transaction holds the row now...
    claimed = []
    claimer = threading.Thread(target=lambda: claimed.append(b.claim(b_db)))
    time.sleep(0.5)        # ...past its lease's end
    claimer.start()
    time.sleep(0.3)
    assert claimed == []   # the claim waits on the row
    a_db.renew_leadership("a", a.token, 0.3)
    a_fenced.commit()      # renewed in the same transaction
    claimer.join(5)
    assert claimed == [False] and b_db.leadership()["holder"] == "a"
    a_db.close()
    b_db.close()
