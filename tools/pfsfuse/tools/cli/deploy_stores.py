"""The subcommands of `pfs deploy`, one per object store, as pachctl 1.7 had them (`local`,
`custom --object-store s3`, `amazon`, `google`, `microsoft`), and what they share.

With --dry-run the objects are printed (for review, or `| kubectl apply -f -`); otherwise they are
applied to the kubeconfig's current context (or --context) with the Kubernetes client. A new
deployment gets a new store seed and auth token; deploying again keeps the ones in its Secrets.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import click

from pfsfuse.metadata.errors import FailedPrecondition, InvalidArgument, NotFound
from pfsfuse.tools.cli.app import App, pass_app
from pfsfuse.version import VERSION


def _common(fn):
    options = [
        click.option(
            "--namespace", default="default", show_default=True, help="The namespace to deploy into (it must exist)."
        ),
        click.option("--registry", default="", help="Pull our image from this registry (REGISTRY/pfsfuse:VERSION)."),
        click.option("--image-pull-secret", default="", help="The Secret that lets nodes pull our image."),
        click.option(
            "--fuse-mode",
            type=click.Choice(["privileged", "device-plugin", "copy"]),
            default="privileged",
            show_default=True,
            help="How worker pods show /pfs: a privileged sidecar, the smarter-devices/fuse "
            "device plugin (deployed too), or files copied in (no FUSE).",
        ),
        click.option("--cluster-roles", is_flag=True, help="Give pfsd a ClusterRole instead of a namespace Role."),
        click.option(
            "--metadata-size", default="10Gi", show_default=True, help="The size of pfsd's volume (its index)."
        ),
        click.option("--storage-class", default="", help="The StorageClass of pfsd's volume (default: the cluster's)."),
        click.option("--context", default=None, help="The kubeconfig context (default: the current one)."),
        click.option("--dry-run", is_flag=True, help="Print the objects instead of applying them."),
        click.option(
            "-o",
            "--output",
            type=click.Choice(["yaml", "json"]),
            default="yaml",
            show_default=True,
            help="The format of --dry-run's objects.",
        ),
    ]
    return functools.reduce(lambda f, opt: opt(f), reversed(options), fn)


@click.command("local")
@_common
@pass_app
def local(app: App, **opts) -> None:
    """Chunks on pfsd's own volume: a single node's trial (workers read data through pfsd)."""
    from pfsfuse.scheduler.kube.deployment import DATA_DIR, Storage

    _deploy(app, Storage(f"file://{DATA_DIR}/chunks"), opts)


@click.command("custom")
@click.option("--object-store", type=click.Choice(["s3"]), required=True, help="The object store's API.")
@click.argument("bucket")
@click.argument("access_key_id")
@click.argument("secret_key")
@click.argument("endpoint")
@click.option(
    "--secure/--insecure", default=True, show_default=True, help="https (or http) to an endpoint without a scheme."
)
@click.option("--region", default="us-east-1", show_default=True)
@_common
@pass_app
def custom(
    app: App,
    object_store: str,
    bucket: str,
    access_key_id: str,
    secret_key: str,
    endpoint: str,
    secure: bool,
    region: str,
    **opts,
) -> None:
    """An S3-compatible object store (MinIO, Ceph, ...): BUCKET ACCESS_KEY_ID SECRET_KEY ENDPOINT."""
    from pfsfuse.scheduler.kube.deployment import Storage

    if "://" not in endpoint:
        endpoint = f"{'https' if secure else 'http'}://{endpoint}"
    creds = {
        "AWS_ACCESS_KEY_ID": access_key_id,
        "AWS_SECRET_ACCESS_KEY": secret_key,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_REGION": region,
    }
    _deploy(app, Storage(f"s3://{_bucket(bucket)}", creds), opts)


@click.command("amazon")
@click.argument("bucket")
@click.argument("region")
@click.option("--credentials", metavar="ID,SECRET[,TOKEN]", help="An access key for the bucket.")
@click.option("--iam-role", metavar="ARN", help="An IAM role for pfsd's and the workers' ServiceAccounts (EKS).")
@_common
@pass_app
def amazon(app: App, bucket: str, region: str, credentials: str | None, iam_role: str | None, **opts) -> None:
    """Amazon S3: BUCKET REGION, with --credentials or --iam-role."""
    from pfsfuse.scheduler.kube.deployment import Storage

    if (credentials is None) == (iam_role is None):
        raise click.UsageError("give either --credentials ID,SECRET[,TOKEN] or --iam-role ARN")
    creds: dict[str, str] = {"AWS_REGION": region}
    roles: dict[str, str] = {}
    if credentials is not None:
        parts = credentials.split(",")
        if len(parts) not in (2, 3) or not all(parts):
            raise click.UsageError("--credentials must be ID,SECRET or ID,SECRET,TOKEN")
        creds |= dict(zip(("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"), parts, strict=False))
    elif iam_role is not None:
        roles = {"eks.amazonaws.com/role-arn": iam_role}
    _deploy(app, Storage(f"s3://{_bucket(bucket)}", creds, roles), opts)


@click.command("google")
@click.argument("bucket")
@click.option(
    "--credentials",
    type=click.Path(exists=True, dir_okay=False),
    help="A service account's JSON key (default: the nodes' or Workload Identity's account).",
)
@_common
@pass_app
def google(app: App, bucket: str, credentials: str | None, **opts) -> None:
    """Google Cloud Storage: BUCKET."""
    from pfsfuse.scheduler.kube.deployment import Storage
    from pfsfuse.scheduler.kube.manifests import STORE_DIR

    creds = {}
    if credentials is not None:
        key = Path(credentials).read_text()
        try:
            json.loads(key)
        except ValueError:
            raise InvalidArgument(f"{credentials} is not a JSON key file") from None
        creds = {"google.json": key, "GOOGLE_APPLICATION_CREDENTIALS": f"{STORE_DIR}/google.json"}
    _deploy(app, Storage(f"gs://{_bucket(bucket)}", creds), opts)


@click.command("microsoft")
@click.argument("container")
@click.argument("account_name")
@click.argument("account_key")
@_common
@pass_app
def microsoft(app: App, container: str, account_name: str, account_key: str, **opts) -> None:
    """Azure Blob Storage: CONTAINER ACCOUNT_NAME ACCOUNT_KEY."""
    from pfsfuse.scheduler.kube.deployment import Storage

    creds = {"AZURE_STORAGE_ACCOUNT": account_name, "AZURE_STORAGE_KEY": account_key}
    _deploy(app, Storage(f"az://{_bucket(container)}", creds), opts)


def _bucket(name: str) -> str:
    if not name or "/" in name.strip("/") or name != name.strip():
        raise InvalidArgument(f"{name!r} is not a bucket name")
    return name.strip("/")


def _deploy(app: App, storage, opts: dict) -> None:
    from pfsfuse.scheduler.kube import deployment, manifests
    from pfsfuse.scheduler.kube.settings import Settings

    image = f"{opts['registry'].rstrip('/')}/pfsfuse:{VERSION}" if opts["registry"] else Settings().image
    settings = Settings(
        namespace=opts["namespace"],
        image=image,
        image_pull_secret=opts["image_pull_secret"],
        fuse_mode=opts["fuse_mode"],
        pfsd_address=f"pfsd.{opts['namespace']}.svc:{deployment.PORT}",
    )
    d = deployment.Deployment(
        settings=settings,
        storage=storage,
        cluster_roles=opts["cluster_roles"],
        metadata_size=opts["metadata_size"],
        storage_class=opts["storage_class"],
    )
    if opts["dry_run"]:
        objs = deployment.objects(d, deployment.new_store_json(storage), deployment.new_token())
        app.out.line(manifests.dump(objs, opts["output"]).rstrip("\n"))
        return
    from pfsfuse.scheduler.kube.client import Objects, api_client

    objects = Objects(api_client(opts["context"]))
    store_json, token = _kept_secrets(objects, settings, storage)
    for obj in deployment.objects(d, store_json or deployment.new_store_json(storage), token or deployment.new_token()):
        what = objects.apply(obj)
        app.out.line(f"{obj['kind']} {obj['metadata']['name']} {what}", flush=True)
    app.out.line(
        f"pfsd is starting: `kubectl -n {settings.namespace} get pods` shows it; "
        "pipelines run as worker pods in the same namespace"
    )


def _kept_secrets(objects, settings, storage) -> tuple[bytes | None, str | None]:
    """The store config and token of a previous deployment here: a store keeps its seed."""
    import base64

    from pfsfuse.scheduler.kube import deployment

    found = []
    for name, key in ((settings.storage_secret, "store.json"), (settings.auth_secret, "token")):
        try:
            data = objects.read("Secret", name, settings.namespace).data or {}
        except NotFound:
            data = {}
        found.append(base64.b64decode(data[key]) if key in data else None)
    store_json, token = found
    if store_json is not None and deployment.store_url(store_json) != storage.url:
        raise FailedPrecondition(
            f"the store deployed in namespace {settings.namespace} uses "
            f"{deployment.store_url(store_json)}, not {storage.url}: undeploy it first"
        )
    return store_json, token.decode() if token is not None else None


COMMANDS = [local, custom, amazon, google, microsoft]
