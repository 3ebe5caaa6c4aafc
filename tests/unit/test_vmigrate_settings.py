"""The master's vmigrate settings (_utils/vmigrate_settings.py): read and checked in one place,
the caps without the hypervisors; and vmigrate_validate.valid, for values used only when
good."""
import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError

from tests.support.master import shared

settings_ = shared("vmigrate_settings")
validate_ = shared("vmigrate_validate")


def test_defaults_and_the_target_type_follow_the_target():
    conf = settings_.settings({"vmigrate": {"hypervisors_target": ["hv1", "hv2"]}})
    assert conf == {"tgt": ["hv1", "hv2"], "tgt_type": "list", "query_timeout": 10,
                    "return_margin": 30, "timeout": 600}
    assert settings_.settings({"vmigrate": {"hypervisors_target": "hv*"}})["tgt_type"] == "glob"
    assert settings_.caps({}) == {"max_outgoing": 1, "max_incoming": 2}


@pytest.mark.parametrize("conf, words", [
    ({}, "vmigrate:hypervisors_target is not set"),
    ({"hypervisors_target": ["a"], "return_margin": 0}, "vmigrate:return_margin 0"),
    ({"hypervisors_target": ["a"], "timeout": "600"}, "vmigrate:timeout '600'"),
])
def test_bad_settings_are_refused_naming_the_key(conf, words):
    with pytest.raises(SaltInvocationError, match=words):
        settings_.settings({"vmigrate": conf})


@pytest.mark.parametrize("key, value", [("max_outgoing", 0), ("max_incoming", True)])
def test_bad_caps_are_refused_naming_the_key(key, value):
    with pytest.raises(CommandExecutionError, match=f"vmigrate:{key} {value!r}"):
        settings_.caps({"vmigrate": {key: value}})


@pytest.mark.parametrize("check, value, ok", [
    ("vm_name", "vdisk", True), ("vm_name", "vdisk\n", False),
    ("host_uuid", "00000000-0000-4000-8000-000000000001", True), ("host_uuid", "x", False),
])
def test_valid_says_whether_a_check_accepts_a_value(check, value, ok):
    assert validate_.valid(getattr(validate_, check), value) is ok
