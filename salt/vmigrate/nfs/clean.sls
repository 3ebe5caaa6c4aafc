{#- Undo vmigrate.nfs.server and vmigrate.nfs.client: our exports removed (other entries stay), our mounts
    unmounted and dropped from fstab. Packages stay. #}
{%- from "vmigrate/map.jinja" import mapdata with context %}

{%- if mapdata.nfs.server.exports %}
vmigrate-nfs-clean-exports-absent:
  vmigrate_nfs.exports_absent:
    - name: {{ mapdata.nfs.server.exports_file | json }}
{%- endif %}

{%- for mount in mapdata.nfs.client.mounts %}

vmigrate-nfs-clean-mount-{{ loop.index }}-unmounted:
  mount.unmounted:
    - name: {{ mount.name | json }}
    - device: {{ mount.device | json }}
    - persist: true
{%- endfor %}
