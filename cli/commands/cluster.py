"""``keysplit cluster create|abandon|status|refresh|replace|rotate|shred``: a threshold key
cluster.

Thin glue over :mod:`keysplit.service.cluster_admin`: the DKG, the status checks and the
refresh are library calls; this module parses ``--node NAME=URL`` and prints.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from keysplit.store.base import MAX_BATCH

from .._common import EXIT_USAGE, check_subject_arg, fail, handle_errors, info
from .._output import JSON_HELP, emit
from .._service import CA_OPTION, CERT_OPTION, KEY_OPTION, read_token, tls_files
from .._shred import confirm_shred, report_shred

__all__ = ["app"]

app = typer.Typer()

_TOKEN_HELP = "Token allowed 'cluster' on every node (only needed over TCP)."  # noqa: S105


@app.command("create")
@handle_errors
def create_cmd(
    directory: Path = typer.Argument(..., metavar="DIR", help="Directory for cluster.json."),
    threshold: int = typer.Option(..., "--threshold", "-t", help="Nodes needed (T of N)."),
    region: str = typer.Option(..., "--region", help="Region label, e.g. 'in' or 'eu-west'."),
    node: list[str] = typer.Option(
        ..., "--node", metavar="NAME=URL", help="A node service (unix:PATH or https://...)."
    ),
    store: str | None = typer.Option(
        None, "--store", metavar="URL", help="Store of wrapped data keys (default: in DIR)."
    ),
    token_file: Path | None = typer.Option(None, "--token-file", help=_TOKEN_HELP),
    ca: Path | None = CA_OPTION,
    cert: Path | None = CERT_OPTION,
    key: Path | None = KEY_OPTION,
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Run a distributed key generation among unsealed node services; write DIR/cluster.json
    (public data only). Each node keeps its share sealed in its own keyring directory.

    Example: keysplit cluster create cl --threshold 2 --region in
    --node n1=unix:/run/n1.sock --node n2=unix:/run/n2.sock --node n3=unix:/run/n3.sock

    Interrupted? Run the same command again: it finishes (cluster.json written) or erases
    what the cut round left on the nodes and runs it again under the same cluster id
    (DIR/creating.json records it); 'keysplit cluster abandon DIR' erases it instead.

    Exit codes: 0 created; 1 a node sealed, unreachable, of another region, or a dealing
    failed (the node at fault is named); 2 usage.
    """
    from keysplit.service.cluster_admin import create_cluster

    pairs = _node_pairs(node)
    try:
        cfg = create_cluster(
            directory,
            threshold=threshold,
            region=region,
            nodes=pairs,
            store=store,
            token=read_token(token_file),
            tls=tls_files(ca, cert, key),
        )
    except ValueError as exc:
        fail(str(exc), code=EXIT_USAGE)
    info(
        f"cluster {cfg.cluster_id} ({cfg.threshold} of {len(cfg.nodes)}, region {cfg.region}) "
        f"written to {Path(directory) / 'cluster.json'}"
    )
    doc = {
        "cluster_id": cfg.cluster_id,
        "region": cfg.region,
        "threshold": cfg.threshold,
        "nodes": [n.name for n in cfg.nodes],
        "public_key": cfg.public_key,
    }
    emit(doc, as_json, cfg.cluster_id)


def _node_pairs(specs: list[str]) -> list[tuple[str, str]]:
    pairs = []
    for spec in specs:
        name, sep, url = spec.partition("=")
        if not sep or not name or not url:
            fail(f"--node expects NAME=URL, got {spec!r}", code=EXIT_USAGE)
        pairs.append((name, url))
    return pairs


@app.command("abandon")
@handle_errors
def abandon_cmd(
    directory: Path = typer.Argument(..., metavar="DIR", help="The unfinished cluster's DIR."),
    cluster_id: str | None = typer.Option(
        None, "--cluster-id", metavar="ID", help="Without DIR/creating.json: the cluster id."
    ),
    node: list[str] = typer.Option(
        [], "--node", metavar="NAME=URL", help="With --cluster-id: a node it may be on."
    ),
    completed: bool = typer.Option(
        False,
        "--completed",
        help="With --cluster-id: erase a completed membership too (a cluster no "
        "cluster.json describes any more; cluster status says 'incomplete' for one a "
        "create cut before cluster.json left). Refused while DIR/cluster.json describes it.",
    ),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    token_file: Path | None = typer.Option(None, "--token-file", help=_TOKEN_HELP),
    ca: Path | None = CA_OPTION,
    cert: Path | None = CERT_OPTION,
    key: Path | None = KEY_OPTION,
) -> None:
    """Abandon a cluster whose 'cluster create' never completed: each of its nodes erases
    its uncommitted membership (share overwritten, then unlinked) and, if it is a member of
    no other cluster, its region pin, so the node can join another cluster of any region.
    A node refuses to erase a membership whose creation completed, unless --completed
    (with --cluster-id) says so: whatever that cluster protected is lost once fewer than T
    of its shares are left.

    Example: keysplit cluster abandon cl  (or: --cluster-id ID --node n1=unix:/run/n1.sock)

    Exit codes: 0 abandoned (on every node that had it); 1 DIR/cluster.json exists, nothing
    recorded, a node unreachable or refusing (named); 2 usage.
    """
    from keysplit.service.cluster_admin import abandon_cluster

    if (cluster_id is None) != (not node):
        fail("--cluster-id and --node go together", code=EXIT_USAGE)
    if completed and cluster_id is None:
        fail("--completed goes with --cluster-id and --node", code=EXIT_USAGE)
    tls, token = tls_files(ca, cert, key), read_token(token_file)
    pairs = _node_pairs(node)
    cid, erased = abandon_cluster(
        directory, cluster_id=cluster_id, nodes=pairs, token=token, tls=tls, completed=completed
    )
    info(
        f"cluster {cid} abandoned"
        + (f": erased on {', '.join(erased)}" if erased else ": no node held it")
    )
    emit({"cluster_id": cid, "erased": erased}, as_json, cid)


@app.command("status")
@handle_errors
def status_cmd(
    directory: Path = typer.Argument(..., metavar="DIR", help="Cluster directory."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable status."),
    token_file: Path | None = typer.Option(None, "--token-file", help=_TOKEN_HELP),
    ca: Path | None = CA_OPTION,
    cert: Path | None = CERT_OPTION,
    key: Path | None = KEY_OPTION,
) -> None:
    """Each node: reachable, sealed, region, epoch, and whether its share matches the public
    commitments; and its memberships of other clusters left by a cut 'cluster create'
    (uncommitted, or incomplete: some of their nodes lack them), which 'cluster abandon'
    clears. Exit code 1 if fewer than T nodes are usable.

    Example: keysplit cluster status nodes/ --json

    Exit codes: 0 at least T nodes usable; 1 fewer, or cluster.json unreadable; 2 usage.
    """
    from keysplit.service.cluster_admin import cluster_status

    cfg, consistent, nodes = cluster_status(
        directory, token=read_token(token_file), tls=tls_files(ca, cert, key)
    )
    usable = sum(1 for n in nodes if n.reachable and n.sealed is False and n.share_ok)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "cluster_id": cfg.cluster_id,
                    "region": cfg.region,
                    "threshold": cfg.threshold,
                    "epoch": cfg.epoch,
                    "commitments_ok": consistent,
                    "usable": usable,
                    "nodes": [n.as_dict() for n in nodes],
                }
            )
        )
    else:
        typer.echo(
            f"cluster {cfg.cluster_id}  region {cfg.region}  {cfg.threshold} of {len(nodes)}  "
            f"epoch {cfg.epoch}  commitments {'ok' if consistent else 'MISMATCH'}"
        )
        for n in nodes:
            state = "unreachable" if not n.reachable else ("sealed" if n.sealed else "unsealed")
            share = {True: "ok", False: "BAD", None: "unchecked"}[n.share_ok]
            typer.echo(
                f"  {n.name:<12} {state:<11} region={n.region} epoch={n.epoch} share={share}"
                + (f"  ({n.error})" if n.error else "")
            )
            for cid, what in sorted(n.others.items()):
                how = "--completed" if what == "incomplete" else ""
                typer.echo(
                    f"    also: cluster {cid}: {what} (a cut cluster create; if no "
                    f"cluster.json describes it: keysplit cluster abandon DIR --cluster-id "
                    f"{cid} --node NAME=URL ... {how})".replace(" )", ")")
                )
    if not consistent or usable < cfg.threshold:
        raise typer.Exit(1)


@app.command("refresh")
@handle_errors
def refresh_cmd(
    directory: Path = typer.Argument(..., metavar="DIR", help="Cluster directory."),
    token_file: Path | None = typer.Option(None, "--token-file", help=_TOKEN_HELP),
    ca: Path | None = CA_OPTION,
    cert: Path | None = CERT_OPTION,
    key: Path | None = KEY_OPTION,
    abort: bool = typer.Option(
        False,
        "--abort",
        help="Erase what an unfinished refresh staged on the nodes (cluster status names "
        "them) instead of refreshing; refused by a node cluster.json's refresh still needs.",
    ),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Re-randomize every node's share without changing the cluster key (shares of the old
    epoch no longer combine with new ones; records are unaffected). Every node must be
    unsealed and reachable. An interrupted refresh leaves each node that finished its round
    a staged next-epoch share (cluster status reports it): run the refresh again, or
    --abort to erase it.

    Example: keysplit cluster refresh nodes/

    Exit codes: 0 refreshed (or aborted); 1 a node unreachable, sealed or at fault (named);
    2 usage.
    """
    from keysplit.service.cluster_admin import abort_refresh, refresh_cluster

    if abort:
        erased = abort_refresh(
            directory, token=read_token(token_file), tls=tls_files(ca, cert, key)
        )
        info(
            "erased the staged refresh on: " + ", ".join(erased)
            if erased
            else "no node had a staged refresh"
        )
        emit({"erased": erased}, as_json, len(erased))
        return
    cfg = refresh_cluster(directory, token=read_token(token_file), tls=tls_files(ca, cert, key))
    info(f"cluster {cfg.cluster_id} refreshed: epoch {cfg.epoch}")
    emit({"cluster_id": cfg.cluster_id, "epoch": cfg.epoch}, as_json, cfg.epoch)


@app.command("replace")
@handle_errors
def replace_cmd(
    directory: Path = typer.Argument(..., metavar="DIR", help="Cluster directory."),
    node: str = typer.Argument(..., metavar="NAME=URL", help="Lost node's name = new node URL."),
    token_file: Path | None = typer.Option(None, "--token-file", help=_TOKEN_HELP),
    ca: Path | None = CA_OPTION,
    cert: Path | None = CERT_OPTION,
    key: Path | None = KEY_OPTION,
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Replace a lost node by a fresh one (its own keyring, served and unsealed): T healthy
    nodes recover the lost node's share for it without anyone learning more. Nothing is
    re-encrypted; DIR/cluster.json then names the new node.

    Example: keysplit cluster replace cl n2=unix:/run/n4.sock

    Exit codes: 0 replaced; 1 fewer than T healthy nodes, the new node sealed or of another
    region, or a helper at fault (named); 2 usage.
    """
    from keysplit.service.cluster_admin import replace_node
    from keysplit.service.cluster_config import check_url

    name, sep, url = node.partition("=")
    if not sep or not name or not url:
        fail(f"expected NAME=URL, got {node!r}", code=EXIT_USAGE)
    try:
        check_url(url)
    except ValueError as exc:
        fail(str(exc), code=EXIT_USAGE)
    cfg = replace_node(
        directory, name, url, token=read_token(token_file), tls=tls_files(ca, cert, key)
    )
    info(f"node {name} of cluster {cfg.cluster_id} is now {url}")
    new = cfg.node(name)
    doc = {"cluster_id": cfg.cluster_id, "node": name, "url": url, "keyring_id": new.keyring_id}
    emit(doc, as_json, new.keyring_id)


@app.command("rotate")
@handle_errors
def rotate_cmd(
    directory: Path = typer.Argument(..., metavar="OLD_DIR", help="The cluster rotated from."),
    new_directory: Path = typer.Argument(
        ..., metavar="NEW_DIR", help="A cluster made by 'keysplit cluster create' (new key)."
    ),
    token_file: Path = typer.Option(
        ..., "--token-file", help="Token allowed 'datakey' on the nodes of both clusters."
    ),
    ca: Path | None = CA_OPTION,
    cert: Path | None = CERT_OPTION,
    key: Path | None = KEY_OPTION,
    batch_size: int = typer.Option(
        1000, "--batch-size", min=1, max=MAX_BATCH, help="Keys per batch."
    ),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Rotate to a new cluster key: rewrap every data key of OLD_DIR's store under
    NEW_DIR's cluster (records are untouched). Run again after an interruption.

    Shreds need no pause: from the first run on, every shred (and legal hold) made through
    OLD_DIR reaches NEW_DIR too (OLD_DIR/successor.json names it), and each run shreds in
    NEW_DIR every subject shredded in OLD_DIR's store since the last run that had not
    reached NEW_DIR (by a client on another host whose copy of OLD_DIR lacks successor.json:
    copy it there, with NEW_DIR at the same path), and lifts there the holds such a client
    lifted. Only a key the rotation moved is shredded so (each run records a check value of
    every key it moves, OLD_DIR/moved.sqlite): a key written in NEW_DIR afresh is kept. Run
    it once more after every backend uses NEW_DIR, before retiring OLD_DIR.

    Example: keysplit cluster create cl2 ...; keysplit cluster rotate cl cl2 --token-file t

    Exit codes: 0 rotated; 1 fewer than T nodes of either cluster, another region; 2 usage.
    """
    from keysplit.service.cluster_admin import rotate_cluster

    try:
        done = rotate_cluster(
            directory,
            new_directory,
            token=read_token(token_file),
            batch_size=batch_size,
            tls=tls_files(ca, cert, key),
        )
    except ValueError as exc:
        fail(str(exc), code=EXIT_USAGE)
    info(
        f"{done.moved} data keys rewrapped under {new_directory}"
        + (f", {done.shredded} shredded there (shredded in {directory})" if done.shredded else "")
        + "; point the backends at it"
    )
    emit({"moved": done.moved, "shredded": done.shredded}, as_json, done.moved)


@app.command("shred")
@handle_errors
def shred_cmd(
    directory: Path = typer.Argument(..., metavar="DIR", help="Cluster directory."),
    subject: str = typer.Argument(..., help="The subject (user id) whose data key to destroy."),
    token_file: Path = typer.Option(
        ..., "--token-file", help="Token allowed 'datakey' for SUBJECT on the nodes."
    ),
    ca: Path | None = CA_OPTION,
    cert: Path | None = CERT_OPTION,
    key: Path | None = KEY_OPTION,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    wait: float = typer.Option(
        0.0,
        "--wait",
        min=0.0,
        metavar="SECONDS",
        help="Wait up to SECONDS until every live client caching the cluster's keys has "
        "dropped the key; name those that have not.",
    ),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Destroy SUBJECT's wrapped data key in the cluster's store: its records can never be
    decrypted again, by any quorum of nodes.

    Refused (exit 1) while the subject is under legal hold. A tombstone (a tag derived from
    the subject's PRF output: T nodes evaluate it) is written with the delete; every client
    caching the cluster's keys drops the key within its poll interval, and before its lease
    expires in any case.

    Once 'keysplit cluster rotate DIR NEW' began (DIR/successor.json), the key is shredded
    in NEW's store too, in the same call.

    Example: keysplit cluster shred cl user-4711 --token-file app.token --yes --wait 10

    Exit codes: 0 shredded (and, with --wait, acknowledged by every live client); 1 not
    confirmed, legal hold; 2 usage; 3 the subject had no data key; 4 shredded, but some
    live clients did not acknowledge within --wait (named).
    """
    from keysplit.service.cluster_admin import shred_subject

    check_subject_arg(subject)
    confirm_shred(subject, yes)
    done = shred_subject(
        directory, subject, token=read_token(token_file), wait=wait, tls=tls_files(ca, cert, key)
    )
    report_shred(
        subject,
        existed=done.existed,
        tombstone_seq=done.tombstone_seq,
        holders=len(done.holders),
        pending=done.pending,
        wait=wait,
        as_json=as_json,
        no_key=f"{subject!r} has no data key in this cluster's store: nothing was shredded",
        holder=("client(s)", "client"),
    )
