"""Thumbnails (issue 11, item 1): made with each file, served only to the owner, made lazily by the
gallery and by `aigen doctor --thumbnails`; and the page facts of item 7 that need no browser
(the title of a generation's page, its heading order, what a Download link says)."""

from __future__ import annotations

import io
import json
import re

import pytest
from fakes.web import Clock, WsgiClient, events, open_home, real_generation, seed_generation, tiny_png_bytes

from aigen.web.app import WebSettings, make_app


@pytest.fixture
def env(home):
    h, store = open_home(home)
    clock = Clock()

    class Env:
        pass

    e = Env()
    e.home, e.store = h, store

    def app(**kw):
        return make_app(WebSettings(home=h, store=store, clock=clock, monotonic=clock.monotonic, **kw))

    e.app = app()
    e.client = lambda: WsgiClient(e.app)
    return e


def webp_size(data: bytes) -> tuple[int, int]:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "WEBP"
        return im.size


def thumb_columns(store, gid):
    return {(a["kind"], a["idx"]): (a["thumb_path"], a["thumb2x_path"]) for a in store.assets(gid)}


def big_png(path, width: int, height: int) -> None:
    """A picture as the `local` provider paints one (detail, gradients), saved as it saves them."""
    from aigen.media import art

    art.save_png(art.render_image("a red fox at dawn in a misty forest", 7, 1, width, height), path)


def test_the_pipeline_makes_1x_and_2x_previews_of_every_image_and_video(env):
    gid = real_generation(env.home, env.store, "alice", "a red fox at dawn", images=2, videos=1)
    for a in env.store.assets(gid):
        stem = a["path"].rsplit(".", 1)[0]
        assert (a["thumb_path"], a["thumb2x_path"]) == (f"{stem}.thumb.webp", f"{stem}.thumb2x.webp")
        one = webp_size((env.home.path / a["thumb_path"]).read_bytes())
        two = webp_size((env.home.path / a["thumb2x_path"]).read_bytes())
        # Images are 256x256 (not enlarged: both previews keep that size); the video 320x240 (2x keeps it,
        # 1x is 256 on the long side).
        assert two == (a["width"], a["height"])
        assert one == ((256, 256) if a["kind"] == "image" else (256, 192))


def test_previews_are_small_and_keep_the_shape_of_a_big_image(tmp_path):
    from aigen.media.thumbs import make_thumbnails

    src = tmp_path / "big.png"
    big_png(src, 1024, 640)
    outs = (tmp_path / "a.webp", tmp_path / "b.webp")
    assert make_thumbnails(src, outs) == [(256, 160), (512, 320)]
    assert webp_size(outs[0].read_bytes()) == (256, 160) and webp_size(outs[1].read_bytes()) == (512, 320)
    assert outs[1].stat().st_size < src.stat().st_size / 10


def test_previews_from_the_checks_decoded_pixels_are_the_previews_of_the_file(tmp_path):
    """The pipeline hands make_thumbnails the picture its check decoded: the previews are byte for byte
    those made from the file, and a picture too large to preview is refused the same way."""
    from aigen.errors import MediaCheckError
    from aigen.media import probe, thumbs

    src = tmp_path / "image_1.png"
    big_png(src, 1024, 640)
    info = probe.probe_image(src, keep_pixels=True)
    assert info == probe.ImageInfo("png", 1024, 640) and info.pixels.size == (1024, 640)
    assert probe.probe_image(src).pixels is None  # kept only when asked
    assert probe.KEEP_PIXELS_MAX == thumbs.MAX_PIXELS  # never kept for a picture too large to preview
    big = tmp_path / "big.png"
    from PIL import Image as PILImage

    PILImage.new("L", (300, 200)).save(big)
    import unittest.mock

    with unittest.mock.patch.object(probe, "KEEP_PIXELS_MAX", 300 * 200 - 1):
        assert probe.probe_image(big, keep_pixels=True).pixels is None
    assert probe.probe_image(big, keep_pixels=True).pixels.size == (300, 200)
    from_file = (tmp_path / "f1.webp", tmp_path / "f2.webp")
    from_pixels = (tmp_path / "p1.webp", tmp_path / "p2.webp")
    assert thumbs.make_thumbnails(src, from_file) == thumbs.make_thumbnails(src, from_pixels, image=info.pixels)
    assert [p.read_bytes() for p in from_file] == [p.read_bytes() for p in from_pixels]

    from PIL import Image

    huge = Image.new("L", (9000, 8000))
    with pytest.raises(MediaCheckError, match="image_1.png: 9000x8000 is too large to preview"):
        thumbs.make_thumbnails(src, (tmp_path / "h1.webp", tmp_path / "h2.webp"), image=huge)


def test_the_pipeline_decodes_each_image_once_for_its_check_and_previews(env, monkeypatch):
    """The check decodes the image in full; the previews are made from those pixels, not from a
    second decode of the file (issue 13: 21 ms of CPU per 1024x1024 image)."""
    from PIL import Image

    opened = []
    real_open = Image.open

    def counting_open(fp, *args, **kw):
        if "image_" in str(fp):
            opened.append(str(fp))
        return real_open(fp, *args, **kw)

    monkeypatch.setattr(Image, "open", counting_open)
    gid = real_generation(env.home, env.store, "alice", "a red fox at dawn", images=2, videos=0)
    assets = env.store.assets(gid)
    assert all(a["status"] == "done" and a["thumb_path"] and a["thumb2x_path"] for a in assets)
    # Per image, the check opens the file twice (verify() for its structure, then load() for its pixels);
    # the previews used to open it a third time to decode it again.
    assert len(opened) == 4, opened


def test_a_file_that_is_not_a_picture_gets_no_preview_and_says_why(tmp_path):
    from aigen.errors import MediaCheckError
    from aigen.media.thumbs import make_thumbnails

    src = tmp_path / "image_1.png"
    src.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(MediaCheckError, match="image_1.png: cannot read it as a picture"):
        make_thumbnails(src, (tmp_path / "a.webp", tmp_path / "b.webp"))
    assert not (tmp_path / "a.webp").exists()


def test_the_thumbnail_routes_serve_the_owner_and_nobody_else(env):
    gid = real_generation(env.home, env.store, "alice", "a red fox at dawn", images=1, videos=1)
    image, video = (next(a for a in env.store.assets(gid) if a["kind"] == k) for k in ("image", "video"))
    anon = env.client()
    assert anon.get(f"/media/{image['id']}/thumb").status == 401

    alice = env.client()
    alice.login("alice")
    for a in (image, video):
        for variant, column in (("thumb", "thumb_path"), ("thumb2x", "thumb2x_path")):
            r = alice.get(f"/media/{a['id']}/{variant}")
            assert r.status == 200, (variant, r.status)
            assert r.header("content-type") == "image/webp"
            assert r.body == (env.home.path / a[column]).read_bytes()
            assert r.header("etag") and "private" in r.header("cache-control")
    # A preview shown in a tile is not a view of the file.
    assert [e for e in events(env.store) if e["kind"] == "asset_view"] == []

    mallory = env.client()
    mallory.login("mallory")
    missing = mallory.get("/media/999999/thumb")
    for a in (image, video):
        for variant in ("thumb", "thumb2x"):
            r = mallory.get(f"/media/{a['id']}/{variant}")
            # Another user's asset is answered exactly like one that does not exist.
            assert (r.status, r.body) == (404, missing.body)
    assert alice.get("/media/12345678901234567890/thumb").status == 404


@pytest.mark.parametrize("tampered", [
    "../../../etc/passwd",
    "/etc/passwd",
    "generated_content/bob/other/image_1.thumb.webp",  # inside the home, but another generation's folder
    "generated_content/alice/{gid}/../../bob/x/image_1.thumb.webp",
    "generated_content/alice/{gid}/image_1.thumb.webp\x00.png",
])
def test_a_tampered_preview_path_is_never_served(env, tampered):
    gid = seed_generation(env.store, env.home, "alice", images=1, videos=0)
    other = env.home.path / "generated_content" / "bob" / "other"
    other.mkdir(parents=True)
    (other / "image_1.thumb.webp").write_bytes(b"bob's")
    aid = env.store.assets(gid)[0]["id"]
    with env.store.transaction() as db:
        db.conn.execute("UPDATE assets SET thumb_path = ? WHERE id = ?", (tampered.format(gid=gid), aid))
    c = env.client()
    c.login("alice")
    r = c.get(f"/media/{aid}/thumb")
    assert r.status == 404 and b"bob's" not in r.body and b"root:" not in r.body


def test_the_gallery_makes_a_missing_preview_on_first_ask_once(env):
    gid = seed_generation(env.store, env.home, "alice", images=2, videos=1)  # rows without previews
    assert set(thumb_columns(env.store, gid).values()) == {(None, None)}
    image = next(a for a in env.store.assets(gid) if a["kind"] == "image")
    c = env.client()
    c.login("alice")
    page = c.get("/")
    assert f'src="/media/{image["id"]}/thumb"' in page.text

    r = c.get(f"/media/{image['id']}/thumb2x")
    assert r.status == 200 and webp_size(r.body) == (8, 8)
    row = env.store.get_asset(image["id"])
    assert row["thumb2x_path"] == row["path"].replace(".png", ".thumb2x.webp")
    made = env.home.path / row["thumb_path"]
    first = made.stat().st_mtime_ns
    assert c.get(f"/media/{image['id']}/thumb").body == made.read_bytes()
    assert made.stat().st_mtime_ns == first  # recorded: served as it is, not made again

    # The fake video's poster is not a picture: no preview can be made, the tile shows the poster itself.
    video = next(a for a in env.store.assets(gid) if a["kind"] == "video")
    r = c.get(f"/media/{video['id']}/thumb2x")
    assert (r.status, r.location) == (302, f"/media/{video['id']}/poster")
    assert env.store.get_asset(video["id"])["thumb2x_path"] is None

    # An image whose file is damaged: the tile falls back to the file (the same ownership check follows).
    other = env.store.assets(gid)[1]
    (env.home.path / other["path"]).write_bytes(b"not a png")
    r = c.get(f"/media/{other['id']}/thumb")
    assert (r.status, r.location) == (302, f"/media/{other['id']}")
    # ...and only to its owner.
    m = env.client()
    m.login("mallory")
    assert m.get(f"/media/{other['id']}/thumb").status == 404


def test_doctor_thumbnails_makes_every_missing_preview(cli, home):
    h, store = open_home(home)
    gid = real_generation(h, store, "alice", "a red fox at dawn", images=2, videos=1)
    for a in store.assets(gid):
        (h.path / a["thumb_path"]).unlink()
        (h.path / a["thumb2x_path"]).unlink()
    with store.transaction() as db:
        db.conn.execute("UPDATE assets SET thumb_path = NULL, thumb2x_path = NULL")
    bad = seed_generation(store, h, "bob", images=1, videos=0)
    (h.path / store.assets(bad)[0]["path"]).write_bytes(b"not a png")

    # Checking alone changes nothing.
    r = cli("doctor", "--json")
    assert "thumbnails" not in json.loads(r.stdout)
    assert set(thumb_columns(store, gid).values()) == {(None, None)}

    r = cli("doctor", "--thumbnails", "--json")
    out = json.loads(r.stdout)
    assert out["thumbnails"] == {"made": 3, "failed": 1}
    failed = [p for p in out["problems"] if p["kind"] == "thumbnail_failed"]
    assert len(failed) == 1 and failed[0]["generation_id"] == bad and "cannot read it as a picture" in \
        failed[0]["message"]
    assert r.exit_code == 1  # that one remains
    for (kind, idx), (one, two) in thumb_columns(store, gid).items():
        assert webp_size((h.path / one).read_bytes()) and webp_size((h.path / two).read_bytes())

    # The damaged file is fixed: the next run makes only that one, and the home is healthy.
    (h.path / store.assets(bad)[0]["path"]).write_bytes(tiny_png_bytes())
    r = cli("doctor", "--thumbnails")
    assert r.exit_code == 0, r.output
    assert "Thumbnails: made for 1 file(s)." in r.output


def test_a_generations_page_is_titled_by_its_prompt_with_headings_in_order(env):
    prompt = "<b>a red fox</b> & a very long prompt " + "that goes on and on " * 10
    gid = seed_generation(env.store, env.home, "alice", prompt)
    c = env.client()
    c.login("alice")
    html = c.get(f"/g/{gid}").text
    title = re.search(r"<title>(.*?)</title>", html, re.S).group(1)
    assert title.startswith("&lt;b&gt;a red fox&lt;/b&gt; &amp; a very long prompt that goes on")
    assert title.endswith("… · aigen") and len(title) < 130
    levels = [int(n) for n in re.findall(r"<h([1-6])\b", html)]
    assert levels[0] == 1 and all(b - a <= 1 for a, b in zip(levels, levels[1:])), levels
    # Each Download link says what it saves; each video has a name.
    assert len(re.findall(r'download>Download<span class="vh"> (image|video) \d \((PNG|MP4), [0-9.]+ (KB|B)\)</span>',
                          html)) == 10 * 2  # the tiles and the table
    assert len(re.findall(r'alt="Video \d: &lt;b&gt;a red fox', html)) == 5
