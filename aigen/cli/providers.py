"""`aigen providers`: every provider, what it makes, its model, whether its key is set."""

from __future__ import annotations

import os

import typer

from aigen.cli.output import console, escape, fail, print_json
from aigen.errors import AigenError


def describe(name: str, home, env) -> dict:
    """One provider's facts from its class attributes (no SDK is imported), and its key state."""
    from aigen import keys as keystore
    from aigen.providers.base import provider_class
    from aigen.config import concurrency_env_var
    from aigen.providers.pricing import Estimate, unit_price

    try:
        cls = provider_class(name)
    except Exception as e:  # a plugin that fails to import is shown, not fatal
        return {"name": name, "error": f"cannot load: {type(e).__name__}: {e}"}
    provider = cls(env=env, home=home)
    missing = provider.missing_keys()
    try:
        cap, cap_source = provider.concurrency_cap()
        cap_error = None
    except AigenError as e:  # shown on its row; `generate` refuses to run with it (exit 2)
        cap, cap_source, cap_error = None, None, e.message
    key_vars = []
    for alternatives in cls.key_env:
        for var in alternatives:
            key_vars.append(keystore.key_status(home, env, var))
    base_env = getattr(cls, "base_url_env", None)
    base_url = (env.get(base_env) if base_env else None) or getattr(cls, "default_base_url", None)
    default_models = dict(cls.default_models)
    # A provider whose models depend on its configuration (gemini: Gemini API key or Agent Platform) says
    # which mode is in force and what that mode can use.
    configure = getattr(provider, "configuration", None)
    configuration = None
    if callable(configure):
        try:
            configuration = configure()
        except AigenError as e:
            configuration = {"mode": None, "problem": e.message, "models": {}, "default_models": {}}
        if configuration.get("default_models"):
            default_models.update(configuration["default_models"])
        if configuration.get("base_url_env"):
            base_env, base_url = configuration["base_url_env"], configuration.get("base_url")
    prices = {}
    for kind, model in sorted(default_models.items()):
        if kind in cls.kinds:
            price = unit_price(name, kind, model, 1024, 1024)
            if price is None:
                prices[kind] = {"text": "unknown", "per": None, "source": None}
            else:
                text = Estimate(price.low, price.high, price.source).text()
                prices[kind] = {"text": f"{text} per {price.per}", "per": price.per, "usd_low": price.low,
                                "usd_high": price.high, "source": price.source, "note": price.note}
    return {
        "name": name,
        "makes": sorted(cls.kinds),
        "description": cls.description,
        "default_models": {k: v for k, v in sorted(default_models.items()) if k in cls.kinds},
        **({"configuration": configuration} if configuration is not None else {}),
        "key_env": [" or ".join(a) for a in cls.key_env],
        "key_set": not missing,
        "keys": [{k: v for k, v in s.items() if k != "masked"} for s in key_vars],
        "missing": missing,
        "base_url_env": base_env,
        "base_url": base_url,
        "concurrency": cap,
        "concurrency_source": cap_source,
        "concurrency_default": cls.concurrency,
        "concurrency_env": concurrency_env_var(name),
        **({"concurrency_error": cap_error} if cap_error else {}),
        "guarantees_size": cls.guarantees_size,
        "price_per_asset": prices,
    }


def providers(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """List the providers: what each makes, its default model, whether its key is set, its concurrency cap.

    Keys are never shown: only whether they are set and where from. The cap is
    the one in force: AIGEN_<PROVIDER>_CONCURRENCY, else `concurrency` in the
    [providers.<name>] table of <home>/config.toml, else the provider's default.
    A bad cap setting exits 2.
    """
    from aigen.providers.base import provider_names

    state = ctx.obj
    try:
        home = state.home.path
        rows = [describe(n, home, dict(os.environ)) for n in provider_names()]
    except AigenError as e:
        fail(e, as_json=as_json)
    if as_json:
        print_json({"providers": rows})
        if any(r.get("concurrency_error") for r in rows):
            raise typer.Exit(2)
        return
    from rich.table import Table

    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    for col in ("provider", "makes", "default model", "key", "cap"):
        table.add_column(col, no_wrap=col != "default model")
    hints = []
    for r in rows:
        if "error" in r:
            table.add_row(r["name"], "", "", "[red]cannot load[/]", "")
            hints.append(f"{r['name']}: {r['error']}")
            continue
        if not r["key_env"]:
            key = "not needed"
        elif r["key_set"]:
            sources = sorted({k["source"] for k in r["keys"] if k["set"]})
            key = f"[green]set[/] ({', '.join(sources)})"
        else:
            key = "[red]missing[/]"
            problem = (r.get("configuration") or {}).get("problem")
            hints.append(f"{r['name']} {problem}" if problem else f"{r['name']} needs {' and '.join(r['missing'])}")
        models = r["default_models"]
        shown = next(iter(models.values())) if len(set(models.values())) == 1 else \
            ", ".join(f"{k} {v}" for k, v in models.items())
        if r.get("concurrency_error"):
            cap = "[red]invalid[/]"
            hints.append(r["concurrency_error"])
        else:
            source = r["concurrency_source"]
            cap = f"{r['concurrency']} ({source.split()[0]})"
            if source != "default":
                where = source.split()[1] if source.startswith("env ") else "config.toml"
                hints.append(f"{r['name']}: cap {r['concurrency']} from {where} (default {r['concurrency_default']})")
        conf = r.get("configuration")
        if conf is not None:
            if conf.get("mode"):
                usable = "; ".join(f"{k}s: {', '.join(v)}" for k, v in conf.get("models", {}).items() if v)
                hints.append(f"{r['name']}: {conf['label']} can use {usable}")
        table.add_row(r["name"], "+".join(r["makes"]), escape(shown or ""), key, cap)
    console.print(table)
    for h in hints:
        console.print(f"[dim]- {escape(h)}[/]")
    console.print("[dim]Set a key with `aigen keys set PROVIDER` or export its variable; "
                  + escape("set a cap with AIGEN_<PROVIDER>_CONCURRENCY or [providers.NAME] concurrency = N in "
                           "config.toml; --json adds descriptions, base URLs and prices.") + "[/]")
    if any(r.get("concurrency_error") for r in rows):
        raise typer.Exit(2)
