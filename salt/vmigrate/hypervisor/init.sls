{#- A hypervisor for vmigrate: libvirt-python in the Python Salt itself runs on (onedir Salt
    cannot import Debian's python3-libvirt; pip.installed uses Salt's own pip), built against
    and matching the installed libvirt, and the vmigrate beacon. #}
{%- from "vmigrate/map.jinja" import mapdata with context %}
{%- set hv = mapdata.hypervisor_setup %}
{%- set requirement = salt["vmigrate_host.libvirt_python_requirement"](hv.libvirt_python_version) %}

vmigrate-hypervisor-build-pkgs-installed:
  pkg.installed:
    - pkgs: {{ hv.build_pkgs | json }}

vmigrate-hypervisor-libvirt-python-installed:
  pip.installed:
    - name: {{ requirement | json }}
    - require:
      - pkg: vmigrate-hypervisor-build-pkgs-installed

vmigrate-hypervisor-beacon-present:
  beacon.present:
    - name: vmigrate
    - save: true
    - uri: {{ hv.beacon.uri | json }}
    - require:
      - pip: vmigrate-hypervisor-libvirt-python-installed
