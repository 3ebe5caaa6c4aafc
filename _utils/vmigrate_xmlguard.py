"""
What a migration's ``xml`` / ``persistent_xml`` option changes against the domain's own
definition, by class of host resource: a caller allowed to run ``vmigrate.migrate`` must not
become root on the hypervisors by handing libvirt a definition that opens another guest's
image, a host file (``/etc/shadow`` as a disk, a serial log, a kernel, an fw_cfg entry), a host
device, raw QEMU arguments or another security label.

Plain functions over XML text (ElementTree; no Salt dunders, no libvirt). The minion compares
the given XML with the definition libvirt holds and refuses every class that differs unless
pillar ``vmigrate:allow_xml_changes`` names it; where ``disk_sources`` is allowed, the
prechecks judge the given XML's disks.

.. code-block:: yaml

    vmigrate:
      allow_xml_changes: [disk_sources]   # default: none
"""

import xml.etree.ElementTree as ET

# class -> what it covers, for the refusal and the docs.
CLASSES = {
    "disk_sources": "which image or host device each disk opens (its type, format, source "
                    "and backing chain), and which disks there are",
    "host_devices": "host devices given to the guest (hostdev, filesystem passthrough, "
                    "smartcard, USB redirection, hostdev and vhost-user interfaces, evdev "
                    "input, TPM passthrough)",
    "qemu_namespace": "raw QEMU arguments, capabilities and overrides (<qemu:commandline> and "
                      "any other namespaced element outside <metadata>)",
    "security_labels": "security labels (<seclabel>, domain-wide or per device)",
    "emulator": "the emulator binary (<emulator>)",
    "host_files": "any other host path the guest's QEMU opens or creates: firmware, NVRAM, "
                  "kernel, initrd, DTB, ACPI tables, fw_cfg entries, character device, "
                  "channel, console log and graphics socket paths, interface scripts, "
                  "memory backing files",
}
HOST_DEVICES = ("hostdev", "filesystem", "smartcard", "redirdev", "tpm")
# Attributes that name a host path, and <os> children whose text is one.
PATH_ATTRS = ("path", "file", "dir", "socket", "dev", "template", "script")
PATH_TEXT = ("loader", "nvram", "kernel", "initrd", "dtb", "table", "backend")


def _canon(el):
    """One line for an element, its attributes sorted, its children in order."""
    attrs = " ".join(f"{k}={v!r}" for k, v in sorted(el.attrib.items()))
    inner = "".join(_canon(c) for c in el)
    text = (el.text or "").strip()
    return f"<{el.tag}{' ' + attrs if attrs else ''}>{text}{inner}</>"


def _walk(el, path=""):
    """(path, element) for ``el`` and everything under it, leaving out <metadata> (free-form
    application data), <target> (the guest's side of a device, not the host's) and <boot>
    (the guest's boot order)."""
    here = f"{path}/{el.tag}" if path else el.tag
    yield here, el
    for child in el:
        if child.tag in ("metadata", "target", "boot"):
            continue
        yield from _walk(child, here)


def _host_device(el):
    """Whether top-level device element ``el`` gives the guest a host device."""
    if el.tag in HOST_DEVICES:
        return True
    if el.tag == "interface" and el.get("type") in ("hostdev", "vhostuser"):
        return True
    return el.tag == "input" and el.get("type") in ("passthrough", "evdev")


def project(text):
    """{class: sorted list of lines} of a domain XML: the parts of it each class covers."""
    root = ET.fromstring(text)
    out = {name: [] for name in CLASSES}
    devices = root.find("devices")
    devices = list(devices) if devices is not None else []
    covered = set()  # elements a class above host_files already takes whole
    for disk in (d for d in devices if d.tag == "disk"):
        target = disk.find("target")
        driver = disk.find("driver")
        parts = [f"disk {target.get('dev') if target is not None else '?'}",
                 f"type={disk.get('type')}", f"device={disk.get('device', 'disk')}",
                 f"format={driver.get('type') if driver is not None else None}"]
        for tag in ("source", "backingStore"):
            child = disk.find(tag)
            if child is not None:
                parts.append(_canon(child))
        out["disk_sources"].append(" ".join(parts))
        covered.update(id(e) for e in disk.iter())
    for top in (d for d in devices if _host_device(d)):
        out["host_devices"].append(_canon(top))
        covered.update(id(e) for e in top.iter())
    for top in devices:
        if top.get("type") == "pty":
            # libvirt allocates the pty and reports its path: output, not a choice
            covered.update(id(e) for e in top.findall("source"))
    for path, el in _walk(root):
        if el.tag.startswith("{"):
            out["qemu_namespace"].append(_canon(el))
        elif el.tag == "seclabel":
            out["security_labels"].append(f"{path} {_canon(el)}")
        elif path == "domain/devices/emulator":
            out["emulator"].append((el.text or "").strip())
        elif id(el) not in covered:
            for attr in PATH_ATTRS:
                if attr in el.attrib:
                    out["host_files"].append(f"{path}@{attr}={el.attrib[attr]}")
            if el.tag in PATH_TEXT and (el.text or "").strip():
                out["host_files"].append(f"{path}={el.text.strip()}")
    return {name: sorted(lines) for name, lines in out.items()}


def changes(current, given):
    """{class: words} for each class in which domain XML ``given`` differs from ``current``
    (libvirt's definition): what it adds and what it drops."""
    have, want = project(current), project(given)
    out = {}
    for name in CLASSES:
        added = [x for x in want[name] if x not in have[name]]
        dropped = [x for x in have[name] if x not in want[name]]
        if added or dropped:
            words = []
            if added:
                words.append("adds " + "; ".join(added[:3]) + (" ..." if len(added) > 3 else ""))
            if dropped:
                words.append("drops " + "; ".join(dropped[:3])
                             + (" ..." if len(dropped) > 3 else ""))
            out[name] = ", ".join(words)
    return out


def allowed(value):
    """Pillar ``vmigrate:allow_xml_changes``, checked: a list of class names (or None)."""
    if value is None:
        return []
    if not isinstance(value, list) or any(v not in CLASSES for v in value):
        raise ValueError(f"pillar vmigrate:allow_xml_changes {value!r}: a list of "
                         f"{', '.join(CLASSES)}")
    return list(value)


def check(option, found, allow):
    """The precheck of option ``option``: ``name``, ``ok``, ``detail``, ``fix``, given ``found``
    (:func:`changes`) and ``allow`` (:func:`allowed`). A changed class pillar allows is named
    in the detail, and passes."""
    bad = {k: v for k, v in found.items() if k not in allow}
    name = f"xml_changes:{option}"
    if not bad:
        passed = ", ".join(sorted(found))
        return {"name": name, "ok": True, "fix": None,
                "detail": f"option {option} changes " + (
                    f"only what pillar vmigrate:allow_xml_changes allows ({passed})" if found
                    else "nothing the guest may use on the host")}
    what = "; ".join(f"{k} ({CLASSES[k]}): {v}" for k, v in bad.items())
    return {"name": name, "ok": False,
            "detail": f"option {option} changes what the guest may use on the host: {what}; a "
                      "migration request may not give a guest host resources it does not have "
                      "now",
            "fix": f"give the guest's own definition for these parts (virsh dumpxml "
                   "--migratable), or, if the change is intended, allow its class on the "
                   "source hypervisor with pillar vmigrate:allow_xml_changes: "
                   f"[{', '.join(bad)}]"}
