{#- NFS server: packages, service, export directories and the exports file from pillar
    vmigrate:nfs:server. Validation runs first; bad pillar changes nothing. #}
{%- from "vmigrate/map.jinja" import mapdata with context %}
{%- set server = mapdata.nfs.server %}

vmigrate-nfs-server-exports-validated:
  vmigrate_nfs.exports_validated:
    - name: {{ server.exports_file | json }}
    - exports: {{ server.exports | json }}
    - allow_unsafe: {{ server.allow_unsafe | json }}
    - exports_file: {{ server.exports_file | json }}

vmigrate-nfs-server-pkg-installed:
  pkg.installed:
    - pkgs: {{ server.pkgs | json }}
    - require:
      - vmigrate_nfs: vmigrate-nfs-server-exports-validated

{%- if server.manage_service %}

vmigrate-nfs-server-service-running:
  service.running:
    - name: {{ server.service | json }}
    - enable: true
    - require:
      - pkg: vmigrate-nfs-server-pkg-installed
{%- endif %}

vmigrate-nfs-server-exports-managed:
  vmigrate_nfs.exports:
    - name: {{ server.exports_file | json }}
    - exports: {{ server.exports | json }}
    - allow_unsafe: {{ server.allow_unsafe | json }}
    - dir_defaults: {{ server.export_dir | json }}
    - require:
      - pkg: vmigrate-nfs-server-pkg-installed
