"""Where a recipient is (app.core.places): stored location, area code, ambiguity."""

from __future__ import annotations

import importlib.util
import textwrap

import phonenumbers
import pytest

from app.core.places import (
    AREA_CODE,
    COUNTRY,
    STORED,
    UNKNOWN,
    Place,
    geocoded_state,
    locate,
    state_from_description,
)
from tests.servers import PROJECT, refusing_imports, run_app_script


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


def _geocoder_numbers() -> list[phonenumbers.PhoneNumber]:
    """+1 numbers that exercise every prefix of the geocoder's data, and then some: each
    prefix completed to ten digits two ways, three exchanges of every area code (most
    prefixes the data lacks), and phonenumbers' example of every type in every +1 region
    (toll-free, territories' numbers)."""
    from phonenumbers.geodata import GEOCODE_DATA

    nationals = {
        (prefix[1:] + pad)[:10]
        for prefix in GEOCODE_DATA
        if prefix.startswith("1")
        for pad in ("2000000000", "9999999999")
    }
    nationals |= {f"{npa}{ex}0100" for npa in range(200, 1000) for ex in (200, 555, 999)}
    numbers = [phonenumbers.parse(f"+1{national}") for national in sorted(nationals)]
    for region in phonenumbers.region_codes_for_country_code(1):
        for kind in range(12):  # every PhoneNumberType but UNKNOWN (99)
            example = phonenumbers.example_number_for_type(region, kind)
            if example is not None:
                numbers.append(example)
    return numbers


def test_the_table_names_the_state_the_geocoder_names_for_every_prefix():
    """`geocoded_state` reads a generated table instead of phonenumbers' geocoder (whose data
    costs every process ~100-170 MB) and must name the state the geocoder's English
    description names, for every prefix of +1 it knows: US numbers above all, and
    territories', Canada's and the Caribbean's too."""
    from phonenumbers import geocoder

    compared = {"US": 0, "other": 0}
    wrong = []
    for number in _geocoder_numbers():
        expected = state_from_description(geocoder.description_for_number(number, "en"))
        if geocoded_state(number) != expected:
            wrong.append((phonenumbers.format_number(number, 0), expected, geocoded_state(number)))
        us = phonenumbers.region_code_for_number(number) == "US"
        compared["US" if us else "other"] += 1
    print(f"compared {compared}")
    assert wrong == []
    assert compared["US"] > 60_000  # 60,532 with phonenumbers 9.0.43
    assert compared["other"] > 6_500  # 6,957
    # And the answers are states, not all None.
    assert geocoded_state(phonenumbers.parse("+12015550100")) == "NJ"
    assert geocoded_state(phonenumbers.parse("+13405550100")) == "VI"
    assert geocoded_state(phonenumbers.parse("+18005550100")) is None
    assert geocoded_state(phonenumbers.parse("+33612345678")) is None


def test_no_process_of_the_service_loads_the_geocoders_data(tmp_path):
    """Web workers and the sender build the app (and locate numbers) without ever importing
    phonenumbers.geocoder or its data: a finder that refuses them would make it fail."""
    done = run_app_script(
        tmp_path,
        before=refusing_imports("phonenumbers.geocoder", "phonenumbers.geodata")
        + textwrap.dedent(
            """
            import app, app.cli, app.outbox.worker, app.outbox.rules_check, app.sending.batches
            import app.web.api, app.web.api_messages, app.web.webhooks, app.consent.importer
            from app.core.places import locate
            """
        ),
        after="""
        assert not any(n.startswith(("phonenumbers.geocoder", "phonenumbers.geodata"))
                       for n in sys.modules)
        print(locate("+14155550100").jurisdiction, locate("+18505550100").jurisdiction)
        """,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].split() == ["US-CA", "US-FL"]


def test_the_committed_table_is_what_the_generator_writes():
    """tools/gen_us_places.py, run now, would write the committed file byte for byte."""
    pytest.importorskip("zipcodes")
    spec = importlib.util.spec_from_file_location(
        "gen_us_places", PROJECT / "tools/gen_us_places.py"
    )
    assert spec is not None and spec.loader is not None
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    committed = (PROJECT / "app/core/data/us_places.tsv").read_text("utf-8")
    assert generator.generate() == committed
    assert sum(line.startswith("geo\t") for line in committed.splitlines()) > 1_000
