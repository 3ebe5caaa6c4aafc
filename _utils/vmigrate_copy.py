"""
Copying disks (option ``copy_storage``): which disks a migration copies, by libvirt's own rule,
and this host's side of the check that each may be copied. A disk on storage this host treats as
shared is refused: the destination would open the very image the source runs from, and the copy
would overwrite it with itself.

Pure functions of the facts ``vmigrate_storage.gather`` returns and of the migration's options.
No Salt dunders: callers import this as plain Python (``vmigrate_imports.py``).
"""

import os
import runpy

(disks_,) = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                        "vmigrate_imports.py"))["siblings"](
    __file__, "vmigrate_disks")

FIX_COPY_SHARED = ("leave copy_storage off for disks on the shared storage (they need no copy), "
                   "or name only the guest's local disks in option migrate_disks")


def copied_targets(disks, options):
    """The disks (targets) a migration with these options copies, by libvirt's own rule
    (``qemuMigrationAnyCopyDisk``): those ``migrate_disks`` names, else every disk that is not
    ``<shareable/>``, not read-only and not empty. None without ``copy_storage``."""
    if not options.get("copy_storage"):
        return None
    chosen = options.get("migrate_disks")
    if chosen:
        return [d["target"] for d in disks if d["target"] in chosen]
    return [d["target"] for d in disks
            if not d["shareable"] and not d["readonly"] and not d["empty"]]


def split_copied(facts, copied):
    """(facts of the disks that stay on shared storage, facts of the disks to copy)."""
    copied = set(copied or ())
    return (dict(facts, disks=[d for d in facts["disks"] if d["target"] not in copied]),
            dict(facts, disks=[d for d in facts["disks"] if d["target"] in copied]))


def assess_copy(facts, options, host):
    """This host's side of copying disks: one ``copy_storage:<target>`` check per disk the
    migration copies, and one per name in the options that is not a disk it could copy. A
    disk on storage this host treats as shared is refused: the destination would open the very
    image the source runs from and the copy would overwrite it with itself."""
    checks = []

    def add(target, ok, detail, fix=None):
        checks.append({"name": f"copy_storage:{target}", "ok": ok, "detail": detail,
                       "fix": None if ok else fix})

    targets = {d["target"] for d in facts["disks"]}
    for key in ("migrate_disks", "migrate_disks_detect_zeroes"):
        for target in options.get(key) or []:
            if target not in targets:
                add(target, False, f"option {key} names disk {target}, which this guest does "
                                   f"not have (its disks: {', '.join(sorted(targets)) or 'none'})",
                    "name disks by their target, as virsh domblklist shows them")
    copied = copied_targets(facts["disks"], options) or []
    for target in options.get("migrate_disks_detect_zeroes") or []:
        if target in targets and target not in copied:
            add(target, False, f"option migrate_disks_detect_zeroes names disk {target}, which "
                               "this migration does not copy",
                "name only disks it copies (read-only, empty and <shareable/> ones are not)")
    for disk in facts["disks"]:
        if disk["target"] not in copied:
            continue
        label = f"disk {disk['target']} ({disk.get('path')})"
        if disk["readonly"] or disk["empty"]:
            add(disk["target"], False, f"{label}: libvirt cannot copy an empty or read-only disk",
                "leave it out of option migrate_disks")
        elif disk["shareable"]:
            add(disk["target"], False, f"{label}: <shareable/>, used by other guests too: a copy "
                                       "would split it in two",
                "leave it out of option migrate_disks and keep it on the shared storage")
        elif disk["type"] == "network":
            add(disk["target"], False, f"{label}: a network disk, reached by both hosts: "
                                       "copying it would overwrite it with itself",
                FIX_COPY_SHARED)
        elif disk["type"] != "file":
            add(disk["target"], False, f"{label}: vmigrate copies file disks only, this is a "
                                       f"{disk['type']} disk",
                "put it on the shared storage, or leave it out of option migrate_disks")
        elif disks_.shared_by_type(disk) or disk.get("override_listed"):
            add(disk["target"], False,
                f"{label}: on {disks_.location(disk)}, which {host} treats as shared storage: "
                "the destination would open this very image, and copying it would overwrite "
                "it with itself", FIX_COPY_SHARED)
        else:
            add(disk["target"], True,
                f"{label}: on {disks_.location(disk)}, local to {host}: libvirt copies it to "
                "the destination while the guest runs (copy_storage "
                f"{options['copy_storage']}); the image here is kept as it was at the switch")
    if options.get("xml"):
        # libvirt copies into the paths of the destination XML; the checks judge the guest's.
        paths = {d["target"]: d["path"] for d in disks_.domain_disks(options["xml"])}
        for disk in facts["disks"]:
            if disk["target"] in copied and paths.get(disk["target"]) != disk["path"]:
                add(disk["target"], False, f"option xml gives disk {disk['target']} the path "
                                           f"{paths.get(disk['target'])}, not {disk['path']}",
                    "keep each copied disk's path in option xml (the prechecks judge it there)")
    if not copied:
        add("none", False, "copy_storage is set but this guest has no disk libvirt would copy",
            "leave copy_storage off")
    return checks
