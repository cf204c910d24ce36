"""`pfs deploy` and `pfs undeploy`: pfsd and its workers on Kubernetes.

`deploy`'s subcommands (one per object store) are in `deploy_stores`. With --dry-run the objects
are printed (for review, or `| kubectl apply -f -`); otherwise they are applied to the kubeconfig's
current context (or --context) with the Kubernetes client.
"""

from __future__ import annotations

import click

from pfsfuse.tools.cli import deploy_stores
from pfsfuse.tools.cli.app import App, pass_app

deploy = click.Group(
    "deploy", commands=deploy_stores.COMMANDS, help="Deploy pfsd and its workers on Kubernetes, over an object store."
)


@click.command("undeploy")
@click.option("--namespace", default="default", show_default=True)
@click.option("--context", default=None, help="The kubeconfig context (default: the current one).")
@pass_app
def undeploy(app: App, namespace: str, context: str | None) -> None:
    """Remove pfsd, its workers and pipelines' objects; pfsd's volume (the index) is kept."""
    from pfsfuse.scheduler.kube import deployment
    from pfsfuse.scheduler.kube.client import Objects, api_client
    from pfsfuse.scheduler.kube.manifests import COMPONENT_LABEL, MANAGED
    from pfsfuse.scheduler.kube.settings import Settings

    objects = Objects(api_client(context))
    settings = Settings(namespace=namespace, fuse_mode="device-plugin")  # every object there may be
    for name in objects.names(
        "ConfigMap",
        namespace,
        f"{COMPONENT_LABEL}=pipeline,app.kubernetes.io/managed-by={MANAGED['app.kubernetes.io/managed-by']}",
    ):
        objects.delete("ConfigMap", name, namespace)  # its worker pods go with it
        app.out.line(f"ConfigMap {name} deleted")
    everything = [
        obj
        for cluster in (False, True)
        for obj in deployment.objects(
            deployment.Deployment(settings=settings, storage=deployment.Storage("file:///"), cluster_roles=cluster),
            b"",
            "",
        )
    ]
    seen = set()
    for obj in reversed(everything):
        key = (obj["kind"], obj["metadata"]["name"])
        if key in seen:
            continue
        seen.add(key)
        if objects.delete(obj["kind"], obj["metadata"]["name"], obj["metadata"].get("namespace")):
            app.out.line(f"{obj['kind']} {obj['metadata']['name']} deleted")
    app.out.line(
        f"kept pfsd's volume data-pfsd-0 (the index): `kubectl -n {namespace} delete pvc data-pfsd-0` removes it"
    )


@click.command("port-forward")
@click.option("--namespace", default="default", show_default=True)
@click.option("--context", default=None, help="The kubeconfig context (default: the current one).")
@click.option("--port", default=30650, show_default=True, type=click.IntRange(0, 65535), help="The port here (0: any).")
@click.option("--address", default="127.0.0.1", show_default=True, help="The address to listen on here.")
@pass_app
def port_forward(app: App, namespace: str, context: str | None, port: int, address: str) -> None:
    """Reach a deployed pfsd from this machine, through the Kubernetes API server (until Ctrl-C)."""
    from kubernetes import client

    from pfsfuse.scheduler.kube.client import api_client
    from pfsfuse.scheduler.kube.portforward import Forwarder, pfsd_pod

    core = client.CoreV1Api(api_client(context))
    pod, target = pfsd_pod(core, namespace)
    try:
        forwarder = Forwarder(core, namespace, pod, target, address, port)
    except OSError as e:
        raise click.ClickException(f"cannot listen on {address}:{port}: {e.strerror}") from None
    host, bound = forwarder.address
    app.out.line(f"forwarding {host}:{bound} to pod {pod} port {target} (Ctrl-C stops)", flush=True)
    app.out.line(f"export PFS_ADDRESS={host}:{bound}", flush=True)
    try:
        forwarder.serve(lambda text: app.out.line(text, flush=True))
    except KeyboardInterrupt:
        pass
    finally:
        forwarder.close()
