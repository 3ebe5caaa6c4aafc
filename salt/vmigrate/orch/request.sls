{#- Started by the reactor (salt/vmigrate/reactor/*.sls) with the event in pillar vmigrate_event.
    The event is untrusted: it goes to Python whole, as data (|json), and is authorized there
    from master config before anything is located (_utils/vmigrate_authz.py). #}
{%- set event = pillar.get('vmigrate_event') or {} %}
vmigrate-orch-request-vmigrate-requested:
  vmigrate.requested:
    - name: {{ event.get('tag', '') | json }}
    - data: {{ event.get('data') | json }}
