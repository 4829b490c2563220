"""The web page in a real browser: Debian's chromium driven by playwright (executable_path; `playwright install`
downloads from outside), against real servers (uvicorn on loopback) with the tiny index. The generator is a
scripted one that streams a word every 60 ms, so the draft is seen before the verified answer and Stop lands
mid-stream. axe-core (vendored, tests/vendor) checks accessibility in light, dark and at 360 px."""

import contextlib
import json
import os
import shutil
import time
from pathlib import Path

import pytest

from core.errors import OverloadedError
from core.feedback import FeedbackStore
from core.types import Generation
from generator.config import DecodingConfig
from pipeline.verify.config import VerifyConfig
from retriever.search import IndexRetriever
from service.app import create_app
from service.config import ServeConfig
from tests.fakes import FakeGenerator
from tests.test_live import serve_in_thread

playwright = pytest.importorskip("playwright.sync_api", reason="playwright is installed by `make setup` (.[dev])")
BROWSER = next((p for p in (shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")) if p), None)
if BROWSER is None:
    pytest.skip("no chromium on this machine: `bash scripts/browser.sh` installs Debian's (as root); make test runs it",
                allow_module_level=True)

AXE = Path(__file__).with_name("vendor") / "axe-core-4.10.3" / "axe.min.js"
TREATED = "Chemotherapy, surgery and radiation therapy treat Ewing sarcoma of the femur [1]."


class SlowGenerator(FakeGenerator):
    """Streams its scripted answer a word at a time, `delay` seconds apart."""

    name = "slow-fake"

    def __init__(self, text: str = TREATED, delay: float = 0.06):
        super().__init__(text)
        self.delay = delay

    def stream(self, messages, **overrides):
        final = self.generate(messages, **overrides)
        for word in final.text.split(" "):
            time.sleep(self.delay)
            if overrides.get("cancel") is not None and overrides["cancel"].is_set():
                yield Generation("", 0, 0, "cancelled")
                return
            yield word + " "
        yield final


class BusyGenerator(SlowGenerator):
    def stream(self, messages, **overrides):
        raise OverloadedError("the generator is busy and its queue is full; retry shortly")


@pytest.fixture(scope="module")
def retriever(tiny_index):
    return IndexRetriever.load(tiny_index)


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=BROWSER, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


def _server(retriever, generator, tmp_path, **cfg):
    store = FeedbackStore(tmp_path / f"feedback-{time.monotonic_ns()}.db")
    url, srv, thread = serve_in_thread(create_app(retriever, generator, ServeConfig(
        k=2, decoding=DecodingConfig(max_new_tokens=64), **cfg), feedback=store))
    return url, srv, thread, store


@pytest.fixture(scope="module")
def site(retriever, tmp_path_factory):
    # the page as it shows a generated answer (served with the lexical judge alone, answers are quotes instead)
    url, srv, thread, store = _server(retriever, SlowGenerator(), tmp_path_factory.mktemp("page"),
                                      verify=VerifyConfig(generated_with_lexical_judge=True))
    yield url, store
    srv.should_exit = True
    thread.join(10)


@pytest.fixture()
def page(browser, site):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(site[0] + "/")
    yield pg
    assert errors == []  # no script error on any page
    context.close()


def _ask(page, question: str) -> None:
    box = page.get_by_label("Question", exact=True)
    box.fill(question)
    box.press("Enter")


def test_ask_shows_the_draft_then_the_verified_answer_and_its_sources(page):
    _ask(page, "How is Ewing sarcoma treated?")
    draft = page.locator(".draft")
    draft.wait_for(state="visible")  # the provisional draft, styled as such, while the answer streams
    assert page.get_by_role("button", name="Stop").is_visible()
    answer = page.locator(".verified")
    answer.wait_for()
    assert page.locator(".draft").count() == 0  # replaced by the verified answer
    assert "surgery" in answer.inner_text()
    assert page.locator(".mode").inner_text() == "Written by the model and checked against the sources"
    assert page.locator(".answer .disclaimer").is_visible() and page.locator("#disclaimer").is_visible()
    marker = answer.get_by_role("button", name="Source 1")
    assert marker.inner_text() == "[1]"
    marker.click()
    source = page.locator("#source")
    assert source.is_visible() and "Ewing" in page.locator("#source-title").inner_text()
    assert "surgery" in page.locator("#source-text mark").inner_text()  # the supporting part, highlighted
    assert page.locator("#source-link").get_attribute("href").startswith("https://")
    cited = page.locator(".cited li")
    assert cited.count() == 1  # only cited sources listed; the other shown passages sit behind a toggle
    others = page.locator("details.others")
    assert others.count() == 1 and not others.locator("li").first.is_visible()
    others.locator("summary").click()
    assert others.locator("li").first.is_visible()


def test_clear_conversations_removes_them_from_this_browser(page):
    _ask(page, "How is Ewing sarcoma treated?")
    page.locator(".verified").wait_for()
    assert "Ewing" in page.evaluate("localStorage.getItem('medcite.conversations.v1')")
    page.once("dialog", lambda d: d.accept())  # "Remove every conversation kept in this browser?"
    page.get_by_role("button", name="Clear conversations").click()
    assert page.evaluate("localStorage.getItem('medcite.conversations.v1')") is None
    assert page.locator("#thread > *").count() == 0 and page.locator("#conversation-list li").count() == 0
    assert "cleared" in page.locator("#status").inner_text()
    page.reload()
    assert page.locator("#conversation-list li").count() == 0  # gone, not hidden


def test_text_from_the_model_is_text_never_html(browser, retriever, tmp_path):
    url, srv, thread, _ = _server(retriever, SlowGenerator("<img src=x onerror=alert(1)> Ewing sarcoma of the "
                                                           "femur is treated with surgery [1].", 0.0), tmp_path,
                                  verify=VerifyConfig(generated_with_lexical_judge=True))  # the model's text kept
    try:
        pg = browser.new_page()
        pg.goto(url + "/")
        _ask(pg, "How is Ewing sarcoma treated?")
        pg.locator(".answer").first.wait_for()
        pg.wait_for_function("document.querySelector('.answer p') !== null")
        assert pg.locator(".turn img").count() == 0
        pg.close()
    finally:
        srv.should_exit = True
        thread.join(10)


def test_an_emergency_shows_the_notice_first(page):
    _ask(page, "I have crushing chest pain and I am sweating")
    notice = page.locator(".triage")
    notice.wait_for(state="visible")
    assert page.locator(".verified").count() == 0  # the notice is up while the draft still streams
    assert "emergency" in notice.inner_text().lower()
    page.locator(".verified").wait_for()
    order = page.evaluate("[...document.querySelectorAll('.turn > *')].map(e => e.className)")
    assert order.index("triage") < order.index("answer")


def test_stop_ends_the_stream_and_says_so(page):
    _ask(page, "How is Ewing sarcoma treated?")
    page.locator(".draft").wait_for(state="visible")
    page.get_by_role("button", name="Stop").click()
    page.get_by_text("Stopped.", exact=False).first.wait_for()
    assert page.get_by_role("button", name="Ask").is_enabled()
    assert page.locator(".verified").count() == 0


def test_a_follow_up_sends_the_history_and_reload_keeps_the_conversation(page):
    bodies: list[dict] = []
    page.on("request", lambda r: bodies.append(json.loads(r.post_data)) if r.url.endswith("/v1/answer") else None)
    _ask(page, "What is (are) Ewing Sarcoma ?")
    page.locator(".verified").wait_for()
    _ask(page, "How is it treated?")
    page.get_by_text("Searched for: How is Ewing Sarcoma treated?").wait_for()
    assert bodies[1]["history"][0] == {"role": "user", "content": "What is (are) Ewing Sarcoma ?"}
    assert bodies[1]["history"][1]["role"] == "assistant"
    page.reload()
    assert page.locator(".turn").count() == 2  # whole answer objects, kept in the browser's storage
    page.locator(".verified").last.get_by_role("button", name="Source 1").click()
    assert page.locator("#source").is_visible()
    assert page.locator("#conversation-list li").count() >= 1
    page.get_by_role("button", name="New conversation").click()
    assert page.locator(".turn").count() == 0


def test_feedback_is_stored(page, site):
    _ask(page, "How is Ewing sarcoma treated?")
    page.locator(".verified").wait_for()
    page.get_by_label("Comment (optional)").fill("clear")
    page.get_by_role("button", name="Helpful", exact=True).click()
    page.get_by_text("your rating was stored").wait_for()  # the server keeps no text (log_text off): it says so
    assert "keeps no written comments" in page.get_by_role("status").filter(has_text="rating").inner_text()
    rows = list(site[1].rows())
    assert rows and rows[-1]["rating"] == "up" and "comment" not in rows[-1]


def test_the_api_key_is_asked_once_and_kept_for_the_tab(browser, retriever, tmp_path):
    url, srv, thread, _ = _server(retriever, SlowGenerator(delay=0.0), tmp_path, api_key="sesame")
    try:
        pg = browser.new_page()
        pg.goto(url + "/")
        _ask(pg, "How is Ewing sarcoma treated?")
        pg.get_by_role("textbox", name="API key").fill("sesame")
        pg.get_by_role("button", name="Use this key").click()
        pg.locator(".verified").wait_for()
        assert pg.evaluate("sessionStorage.getItem('medcite.apiKey')") == "sesame"
        _ask(pg, "What is (are) Ewing Sarcoma ?")
        pg.locator(".verified").nth(1).wait_for()  # no second prompt
        assert not pg.locator("#key-dialog").is_visible()
        pg.close()
    finally:
        srv.should_exit = True
        thread.join(10)


def test_an_error_is_a_sentence(browser, retriever, tmp_path):
    url, srv, thread, _ = _server(retriever, BusyGenerator(), tmp_path)
    try:
        pg = browser.new_page()
        pg.goto(url + "/")
        _ask(pg, "How is Ewing sarcoma treated?")
        error = pg.locator(".error")
        error.wait_for()
        assert error.inner_text() == "The server is busy. Wait a moment and ask again."
        pg.close()
    finally:
        srv.should_exit = True
        thread.join(10)


@pytest.mark.parametrize("scheme, width, question", [
    ("light", 1280, "How is Ewing sarcoma treated?"),
    ("dark", 1280, "I have crushing chest pain and I am sweating"),  # the triage notice's colours too
    ("light", 360, "How is Ewing sarcoma treated?")])
def test_accessibility_in_light_dark_and_narrow(browser, site, scheme, width, question, tmp_path):
    # axe goes in as an inline script, which the page's policy blocks (test_the_page_runs_under_its_csp)
    context = browser.new_context(viewport={"width": width, "height": 900}, color_scheme=scheme, bypass_csp=True)
    pg = context.new_page()
    pg.goto(site[0] + "/")
    _ask(pg, question)
    pg.locator(".verified").wait_for()
    pg.locator(".verified").get_by_role("button").first.click()
    pg.add_script_tag(path=str(AXE))
    found = pg.evaluate("async () => (await axe.run(document)).violations.map(v => ({id: v.id, impact: v.impact,"
                        " nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 3)}))")
    serious = [v for v in found if v["impact"] in ("serious", "critical")]
    assert serious == [], serious
    assert pg.evaluate("document.documentElement.scrollWidth") <= width  # nothing wider than the screen
    name = f"page-{scheme}-{width}.png"
    shot = tmp_path / name
    pg.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    out = os.environ.get("MEDCITE_SCREENSHOTS")  # MEDCITE_SCREENSHOTS=docs/screenshots: the docs' images
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(out) / name)
    context.close()


def test_the_page_runs_under_its_csp(browser, site):
    """Its own files do all the work under `default-src 'self'`; a script injected into it does not run."""
    context = browser.new_context()
    pg = context.new_page()
    blocked: list[str] = []
    pg.on("console", lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None)
    pg.goto(site[0] + "/")
    _ask(pg, "How is Ewing sarcoma treated?")
    pg.locator(".verified").wait_for()
    assert blocked == []
    with contextlib.suppress(playwright.Error):
        pg.add_script_tag(content="window.injected = 1")
    assert pg.evaluate("window.injected") is None and blocked
    context.close()


def test_the_page_is_plain_files_served_by_the_api(site):
    import httpx

    index = httpx.get(site[0] + "/")
    assert index.status_code == 200 and index.headers["content-type"].startswith("text/html")
    assert '<label for="question">Question</label>' in index.text and "http" not in index.text.split("<body>")[0]
    js = httpx.get(site[0] + "/app.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert "innerHTML" not in js.text  # text from the model or corpus goes in as text
    assert httpx.get(site[0] + "/healthz").json() == {"status": "ok"}  # the API is not shadowed

