"""
States for vmigrate's shared storage: validated NFS exports and identical mounts.

Thin over the ``vmigrate_nfs`` execution module, which validates and renders. Used by
``salt/nfs/server.sls`` and ``salt/nfs/client.sls``:

.. code-block:: yaml

    vmigrate-nfs-server-exports-managed:
      vmigrate_nfs.exports:
        - name: /etc/exports.d/vmigrate.exports
        - exports:
          - path: /srv/vmimages
            clients:
              - host: 192.0.2.0/24
                options: {rw: true, anonuid: 64055, anongid: 64055}
        - dir_defaults: {user: libvirt-qemu, group: libvirt-qemu, mode: '0770'}

    vmigrate-nfs-client-mount-srv-vmimages-mounted:
      vmigrate_nfs.mounted:
        - name: /srv/vmimages
        - device: nfs1.example.com:/srv/vmimages
        - fstype: nfs
        - opts: [vers=4.2]

Test mode reports what would change and changes nothing. Test mode does not predict
whether exportfs or the mount would succeed.
"""

import difflib
import os

from salt.exceptions import CommandExecutionError, SaltInvocationError

__virtualname__ = "vmigrate_nfs"


def __virtual__():
    if "vmigrate_nfs.render" not in __salt__:
        return (False, "vmigrate_nfs: the vmigrate_nfs execution module is not loaded")
    return __virtualname__


def _ret(name):
    return {"name": name, "result": True, "changes": {}, "comment": ""}


def _warn(ret, warnings, notes=()):
    if warnings:
        ret["warnings"] = list(warnings)
        ret["comment"] = (ret["comment"] + " WARNING (unsafe options in use): "
                          + "; ".join(warnings)).strip()
    if notes:
        ret["comment"] = (ret["comment"] + " NOTE: " + "; ".join(notes)).strip()
    return ret


def _render(ret, exports, allow_unsafe, exports_file):
    """The module's validated rendering, or None with ``ret`` failed (nothing written)."""
    try:
        return __salt__["vmigrate_nfs.render"](exports, allow_unsafe, exports_file)
    except SaltInvocationError as err:
        ret.update(result=False, comment=f"invalid NFS exports, nothing written: {err}")
    except CommandExecutionError as err:
        ret.update(result=False, comment=str(err))
    return None


def exports_validated(name, exports=None, allow_unsafe=None, exports_file=None):
    """
    Validate the exports and change nothing: a state the others require, so that bad pillar
    fails the run before any package, directory or file is touched.
    """
    ret = _ret(name)
    rendered = _render(ret, exports, allow_unsafe, exports_file)
    if rendered is None:
        return ret
    ret["comment"] = f"{len(rendered['exports'])} export(s) are valid"
    return _warn(ret, rendered["warnings"], rendered.get("notes"))


def exports(name, exports=None, allow_unsafe=None, dir_defaults=None):
    """
    Render ``exports`` into the exports file ``name`` and apply them with ``exportfs -ra``.

    The export directories are created with their ``user``/``group``/``mode`` (from the
    export entry, else ``dir_defaults``) before the file is written. Nothing is written when
    validation fails; if exportfs rejects the file, the previous file is restored.

    :param name: ``/etc/exports.d/<name>.exports`` (ours alone) or ``/etc/exports`` (our lines
        go between markers; other lines are kept)
    :param exports: list of ``{path, clients: [{host, options}], user, group, mode}``
    :param allow_unsafe: unsafe switches permitted: no_root_squash, insecure, async, any_client
    :param dir_defaults: default ``user``, ``group``, ``mode`` of export directories
    """
    ret = _ret(name)
    rendered = _render(ret, exports, allow_unsafe, name)
    if rendered is None:
        return ret
    test = __opts__["test"]
    comments = []
    for export in rendered["exports"]:
        owner = dict(dir_defaults or {})
        owner.update({k: export[k] for k in ("user", "group", "mode") if k in export})
        sub = __states__["file.directory"](
            name=export["path"], makedirs=True, user=owner.get("user"),
            group=owner.get("group"), dir_mode=owner.get("mode"))
        if sub["changes"]:
            ret["changes"].setdefault("directories", {})[export["path"]] = sub["changes"]
        if sub["result"] is False:
            ret.update(result=False, comment=f"export directory {export['path']}: "
                                             f"{sub['comment']}")
            return ret

    current = ""
    if os.path.exists(name):
        with open(name, encoding="utf-8") as fh:
            current = fh.read()
    if current == rendered["content"]:
        comments.append(f"{name} is in the correct state")
    else:
        diff = "".join(difflib.unified_diff(
            current.splitlines(True), rendered["content"].splitlines(True), name, name))
        ret["changes"]["diff"] = diff
        if test:
            comments.append(f"{name} would be updated and exportfs -ra run")
        else:
            try:
                out = __salt__["vmigrate_nfs.apply_exports"](exports, allow_unsafe, name)
            except CommandExecutionError as err:
                ret["changes"].pop("diff")
                ret.update(result=False, comment=str(err))
                return ret
            comments.append(f"{name} updated; exportfs -ra applied it"
                            + (f": {out['output']}" if out["output"] else ""))
    if test and ret["changes"]:
        ret["result"] = None
    ret["comment"] = "; ".join(comments)
    return _warn(ret, rendered["warnings"], rendered.get("notes"))


def exports_absent(name):
    """Remove vmigrate's exports from ``name`` (other entries stay) and run exportfs -ra."""
    ret = _ret(name)
    try:
        new = __salt__["vmigrate_nfs.removed_content"](name)
    except (SaltInvocationError, CommandExecutionError) as err:
        ret.update(result=False, comment=f"nothing removed: {err}")
        return ret
    if new is False:
        ret["comment"] = f"{name} holds no vmigrate exports"
        return ret
    ret["changes"] = {"removed": name} if new is None else {"removed": "vmigrate block"}
    if __opts__["test"]:
        ret.update(result=None, comment=f"vmigrate exports would be removed from {name}")
        return ret
    try:
        __salt__["vmigrate_nfs.remove_exports"](name)
    except CommandExecutionError as err:
        ret.update(result=False, changes={}, comment=str(err))
        return ret
    ret["comment"] = f"vmigrate exports removed from {name}; exportfs -ra applied"
    return ret


def mounts_validated(name, mounts=None, allow_unsafe=None):
    """Validate every client mount and change nothing (the other states require this one)."""
    ret = _ret(name)
    warnings = []
    if not isinstance(mounts, list):
        ret.update(result=False, comment="vmigrate:nfs:client:mounts must be a list")
        return ret
    names = set()
    for i, mount in enumerate(mounts):
        try:
            args = __salt__["vmigrate_nfs.mount_args"](mount, allow_unsafe, i)
        except SaltInvocationError as err:
            ret.update(result=False, comment=f"invalid NFS mount, nothing changed: {err}")
            return ret
        if args["name"] in names:
            ret.update(result=False, comment=f"mount point {args['name']} is listed twice")
            return ret
        names.add(args["name"])
        warnings.extend(args["warnings"])
    ret["comment"] = f"{len(mounts)} mount(s) are valid"
    return _warn(ret, warnings)


def mounted(name, device, fstype="nfs", opts=None, allow_unsafe=None, dir_mode="0755"):
    """
    Mount ``device`` at ``name`` (and persist it in fstab) through ``mount.mounted``, after
    validation; the mount point and its missing parents are created with ``dir_mode``. A
    second run reports no changes and remounts nothing.

    :param name: the mount point, the same path on every hypervisor
    :param device: ``server:/export`` (or a directory for ``fstype: none`` bind mounts)
    :param fstype: nfs, nfs4, or none (bind; the lab's stand-in)
    :param opts: mount options; ``hard`` is added unless ``soft`` is allowed and given
    :param allow_unsafe: permit ``soft`` and/or ``nolock``
    :param dir_mode: mode of created mount point directories
    """
    ret = _ret(name)
    mount = {"name": name, "device": device, "fstype": fstype, "opts": opts or []}
    try:
        args = __salt__["vmigrate_nfs.mount_args"](mount, allow_unsafe)
    except SaltInvocationError as err:
        ret.update(result=False, comment=f"invalid NFS mount, nothing changed: {err}")
        return ret
    warnings = args.pop("warnings")
    missing = not os.path.isdir(name)
    if missing:
        if __opts__["test"]:
            ret["changes"]["mountpoint"] = f"{name} would be created (mode {dir_mode})"
        else:
            os.makedirs(name, mode=int(dir_mode, 8))
            ret["changes"]["mountpoint"] = f"{name} created (mode {dir_mode})"
    # In test mode a missing mount point is one this state creates first: predict that, not
    # mount.mounted's "does not exist and would not be created".
    sub = __states__["mount.mounted"](mkmnt=bool(missing and __opts__["test"]), **args)
    ret["changes"].update(sub["changes"])
    ret["result"] = sub["result"]
    if __opts__["test"] and ret["changes"] and ret["result"] is True:
        ret["result"] = None
    ret["comment"] = sub["comment"]
    return _warn(ret, warnings)


def selinux_virt_use_nfs(name="virt_use_nfs"):
    """
    On SELinux-enforcing hosts, set the ``virt_use_nfs`` boolean (persistently) so QEMU may
    open images on NFS; elsewhere report that nothing is needed.
    """
    ret = _ret(name)
    enforced = (__grains__.get("selinux") or {}).get("enforced")
    if enforced != "Enforcing":
        ret["comment"] = f"SELinux is {enforced or 'absent'}: {name} not needed"
        return ret
    return __states__["selinux.boolean"](name=name, value=True, persist=True)
