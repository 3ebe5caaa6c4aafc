{#- The orchestration behind `salt-run state.orch migrate pillar='{vm: vdisk, dest: host2}'`.
    Thin on purpose: validation, locating, migrating and verifying live in the runner
    (_runners/vmigrate.py); a failed migration fails this state and `state.orch` exits non-zero. #}
vmigrate-migrate-runner-migrate:
  salt.runner:
    - name: vmigrate.migrate
    - vm: {{ pillar.get('vm') | json }}
    - dest: {{ pillar.get('dest') | json }}
    - mode: {{ pillar.get('mode', 'live') | json }}
    - bandwidth: {{ pillar.get('bandwidth') | json }}
    - timeout: {{ pillar.get('timeout') | json }}
