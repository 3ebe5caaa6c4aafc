{#- The orchestration behind `salt-run state.orch evacuate pillar='{host: host1}'`: every
    domain off one hypervisor (_states/vmigrate.py evacuated over _utils/vmigrate_evacuate.py).
    Fails, and state.orch exits non-zero, if any domain could not move. #}
vmigrate-evacuate-vmigrate-evacuated:
  vmigrate.evacuated:
    - name: {{ pillar.get('host', '') | json }}
    - targets: {{ pillar.get('targets') | json }}
    - concurrency: {{ pillar.get('concurrency', 2) | json }}
    - bandwidth: {{ pillar.get('bandwidth') | json }}
    - timeout: {{ pillar.get('timeout') | json }}
