{#- NFS client: every mount from pillar vmigrate:nfs:client at the same path on every
    hypervisor. Validation runs first; bad pillar changes nothing. #}
{%- from "vmigrate/map.jinja" import mapdata with context %}
{%- set client = mapdata.nfs.client %}

vmigrate-nfs-client-mounts-validated:
  vmigrate_nfs.mounts_validated:
    - name: vmigrate-nfs-client-mounts
    - mounts: {{ client.mounts | json }}
    - allow_unsafe: {{ client.allow_unsafe | json }}

vmigrate-nfs-client-pkg-installed:
  pkg.installed:
    - pkgs: {{ client.pkgs | json }}
    - require:
      - vmigrate_nfs: vmigrate-nfs-client-mounts-validated

vmigrate-nfs-client-selinux-virt-use-nfs:
  vmigrate_nfs.selinux_virt_use_nfs:
    - name: virt_use_nfs
    - require:
      - vmigrate_nfs: vmigrate-nfs-client-mounts-validated

{%- for mount in client.mounts %}

vmigrate-nfs-client-mount-{{ loop.index }}-mounted:
  vmigrate_nfs.mounted:
    - name: {{ mount.name | json }}
    - device: {{ mount.device | json }}
    - fstype: {{ mount.get("fstype", "nfs") | json }}
    - opts: {{ mount.get("opts", []) | json }}
    - allow_unsafe: {{ client.allow_unsafe | json }}
    - dir_mode: {{ client.mountpoint_mode | json }}
    - require:
      - pkg: vmigrate-nfs-client-pkg-installed
{%- endfor %}
