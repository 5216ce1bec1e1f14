"""Where a recipient is (app.core.places): stored location, area code, ambiguity."""

from __future__ import annotations

import pytest

from app.core.places import AREA_CODE, COUNTRY, STORED, UNKNOWN, Place, locate


@pytest.mark.parametrize(
    ("phone", "jurisdictions", "zones"),
    [
        ("+14155550100", {"US-CA"}, {"America/Los_Angeles"}),
        ("+12125550100", {"US-NY"}, {"America/New_York"}),
        # Area codes that span two zones keep both.
        ("+18505550100", {"US-FL"}, {"America/New_York", "America/Chicago"}),
        ("+19155550100", {"US-TX"}, {"America/Denver", "America/Chicago"}),
        ("+15415550100", {"US-OR"}, {"America/Los_Angeles", "America/Boise"}),
        ("+17875550100", {"US-PR"}, {"America/Puerto_Rico"}),
        ("+33612345678", {"FR"}, {"Europe/Paris"}),
        ("+16045550100", {"CA"}, {"America/Vancouver"}),
    ],
)
def test_the_area_code_tells_state_and_zones(phone, jurisdictions, zones):
    location = locate(phone)
    assert {p.jurisdiction for p in location.places} == jurisdictions
    assert {p.zone for p in location.places} == zones
    assert location.source in (AREA_CODE, COUNTRY)


def test_a_stored_location_comes_first():
    assert locate("+14155550100", state="Florida").places == (
        Place("US-FL", "America/Chicago"),
        Place("US-FL", "America/New_York"),
    )
    pensacola = locate("+14155550100", zip_code="32501-1234")
    assert pensacola.places == (Place("US-FL", "America/Chicago"),)
    assert pensacola.source == STORED
    # A ZIP code and a state that agree narrow each other; nonsense is ignored.
    assert locate("+14155550100", state="OK", zip_code="73949").places == (
        Place("US-OK", "America/Chicago"),
    )
    assert locate("+14155550100", state="ZZ", zip_code="abcde").source == AREA_CODE


def test_a_us_number_of_no_known_state_may_be_anywhere_in_the_states():
    toll_free = locate("+18005550100")
    assert toll_free.source == UNKNOWN
    assert {p.jurisdiction for p in toll_free.places} == {"US"}
    zones = {p.zone for p in toll_free.places}
    assert {"America/New_York", "Pacific/Honolulu", "America/Anchorage"} <= zones
    assert not any(z.startswith(("Atlantic/", "Pacific/Guam")) for z in zones)


def test_a_number_its_prefix_does_not_place_may_ring_in_any_zone_of_its_country():
    """Not a valid number, so phonenumbers knows no zone for it: every zone of its country
    (before, it had none, and no window at all applied to it)."""
    where = locate("+551191200001")  # a digit short for a São Paulo mobile
    assert where.source == COUNTRY
    assert {place.zone for place in where.places} >= {"America/Sao_Paulo", "America/Manaus"}
    assert {place.jurisdiction for place in where.places} == {"BR"}
