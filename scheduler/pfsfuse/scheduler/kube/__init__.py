"""Pipelines on Kubernetes: the objects a pipeline becomes (`manifests`), the deployment's
settings (`settings`), and the patches a spec may apply to its pods (`patch`).

Nothing here imports the `kubernetes` client: manifests are plain dicts, printed by
`create-pipeline --dry-run` and `deploy --dry-run` and sent by the executor and `pfs deploy`.
"""
