"""Drive nsqadmin's pages in headless Chromium (selenium + Debian's chromium-driver).

Called by tests/tests/nsqadmin_browser.rs with the admin URL and the figures it read from
the nsqd's /stats; reads the same figures off the pages, pauses and empties the channel
through the confirmation pages, and saves a screenshot of every page it visits.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

os.environ.setdefault("SE_OFFLINE", "true")  # never let selenium fetch a driver

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import (  # noqa: E402
    NoSuchElementException,
    StaleElementReferenceException,
)
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402


def browser(profile):
    opts = Options()
    for a in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
        "--user-data-dir=" + profile,
    ):
        opts.add_argument(a)
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or "/usr/lib/chromium/chromedriver"
    if not binary or not os.path.exists(driver):
        sys.exit("chromium and chromedriver are needed (apt-get install chromium chromium-driver)")
    opts.binary_location = binary
    d = webdriver.Chrome(service=Service(executable_path=driver), options=opts)
    d.set_page_load_timeout(30)
    return d


def wait_for(fn, what, timeout=20.0):
    """Poll fn() until it returns something truthy (the page may be refreshing its <main>)."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            v = fn()
            if v:
                return v
        except (NoSuchElementException, StaleElementReferenceException) as e:
            last = e
        time.sleep(0.1)
    raise AssertionError("timed out waiting for %s (%r)" % (what, last))


def cells(d, row_css):
    row = d.find_element(By.CSS_SELECTOR, row_css)
    return [td.text.strip() for td in row.find_elements(By.TAG_NAME, "td")]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--channel", required=True)
    p.add_argument("--topic-messages", type=int, required=True)
    p.add_argument("--channel-depth", type=int, required=True)
    p.add_argument("--channel-in-flight", type=int, required=True)
    p.add_argument("--counter", type=int, required=True)
    p.add_argument("--nodes", nargs="+", required=True)
    p.add_argument("--tuned-node", required=True)
    p.add_argument("--tuned-mem-queue-size", type=int, required=True)
    p.add_argument("--screenshots", required=True)
    a = p.parse_args()
    os.makedirs(a.screenshots, exist_ok=True)
    shot = lambda d, name: d.save_screenshot(os.path.join(a.screenshots, name))  # noqa: E731
    seen = {}
    with tempfile.TemporaryDirectory() as profile:
        d = browser(profile)
        try:
            # Overview: the topic row and its message count.
            d.get(a.url + "/")
            row = "tr[data-topic='%s']" % a.topic
            c = wait_for(lambda: cells(d, row), "topic row on overview")
            assert int(c[2]) == a.channel_depth, c
            assert int(c[4]) == a.topic_messages, c
            assert int(c[7]) == len(a.nodes), c
            seen["overview_messages"] = int(c[4])
            shot(d, "nsqadmin-overview.png")

            # Topic page: one row per node, the channel row, graphs once history has samples.
            d.find_element(By.LINK_TEXT, a.topic).click()
            wait_for(lambda: d.find_element(By.ID, "topic-name").text == a.topic, "topic page")
            for n in a.nodes:
                wait_for(lambda: cells(d, "#topic-nodes tr[data-node='%s']" % n), "node " + n)
            ch = cells(d, "#channels tr[data-channel='%s']" % a.channel)
            assert int(ch[1]) == a.channel_depth, ch
            assert int(ch[3]) == a.channel_in_flight, ch
            seen["topic_channel_depth"] = int(ch[1])

            # Settings table: the node whose topic sets mem_queue_size shows it, marked.
            cell = d.find_element(
                By.CSS_SELECTOR,
                "#topic-settings tr[data-settings-node='%s'] td[data-setting='mem_queue_size']"
                % a.tuned_node,
            )
            assert cell.get_attribute("data-overridden") == "true", cell.get_attribute("outerHTML")
            assert int(cell.text) == a.tuned_mem_queue_size, cell.text
            seen["settings_mem_queue_size"] = int(cell.text)
            for n in a.nodes:
                if n == a.tuned_node:
                    continue
                other = d.find_element(
                    By.CSS_SELECTOR,
                    "#topic-settings tr[data-settings-node='%s'] td[data-setting='mem_queue_size']"
                    % n,
                )
                assert other.get_attribute("data-overridden") == "false", other.text

            def charted():
                d.refresh()
                return len(d.find_elements(By.CSS_SELECTOR, "#charts polyline")) == 3

            wait_for(charted, "three charts with data", timeout=30)
            shot(d, "nsqadmin-topic.png")

            # Channel page: totals and the client.
            d.find_element(By.LINK_TEXT, a.channel).click()
            wait_for(lambda: d.find_element(By.ID, "channel-name").text == a.channel, "channel page")
            total = cells(d, "#channel-nodes tr.total")
            assert int(total[1]) == a.channel_depth, total
            ua = d.find_element(By.CSS_SELECTOR, "table.clients tbody tr td:nth-child(4)").text
            assert ua == "admin-test/1.0", ua
            seen["client_user_agent"] = ua
            shot(d, "nsqadmin-channel.png")

            # Pause, through the confirmation page.
            d.find_element(By.ID, "pause-channel").click()
            q = wait_for(lambda: d.find_element(By.ID, "confirm-question").text, "confirm page")
            assert "pause channel %s of topic %s" % (a.channel, a.topic) in q, q
            shot(d, "nsqadmin-confirm.png")
            d.find_element(By.ID, "confirm").click()
            banner = wait_for(lambda: d.find_element(By.ID, "banner").text, "banner")
            assert banner.startswith("Done: pause channel"), banner
            wait_for(lambda: d.find_element(By.ID, "unpause-channel"), "unpause button")
            assert "paused" in d.find_element(By.TAG_NAME, "h1").text

            # Empty, through the confirmation page: depth drops to 0.
            d.find_element(By.ID, "empty-channel").click()
            wait_for(lambda: d.find_element(By.ID, "confirm"), "confirm page").click()
            banner = wait_for(lambda: d.find_element(By.ID, "banner").text, "banner")
            assert banner.startswith("Done: empty channel"), banner
            total = wait_for(lambda: cells(d, "#channel-nodes tr.total"), "totals")
            assert int(total[1]) == 0, total
            seen["depth_after_empty"] = int(total[1])
            shot(d, "nsqadmin-channel-paused-emptied.png")

            # Nodes, one node, counter (updated by script from /api/counter), lookup.
            d.get(a.url + "/nodes")
            for n in a.nodes:
                wait_for(lambda: cells(d, "#nodes tr[data-node='%s']" % n), "nodes row " + n)
            shot(d, "nsqadmin-nodes.png")
            d.get(a.url + "/nodes/" + a.nodes[0])
            wait_for(lambda: d.find_element(By.ID, "node-name").text == a.nodes[0], "node page")
            shot(d, "nsqadmin-node.png")
            d.get(a.url + "/counter")
            wait_for(
                lambda: int(d.find_element(By.ID, "counter").text) == a.counter
                and d.find_element(By.ID, "counter-rate").text,
                "live counter",
            )
            seen["counter"] = int(d.find_element(By.ID, "counter").text)
            shot(d, "nsqadmin-counter.png")
            d.get(a.url + "/lookup")
            wait_for(lambda: a.channel in d.find_element(By.ID, "lookup-topics").text, "lookup")
            shot(d, "nsqadmin-lookup.png")
        finally:
            d.quit()
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
