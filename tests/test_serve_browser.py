"""serve.py's page in a real browser: Debian's Chromium, headless, driven by Selenium through Debian's
chromedriver, its fake camera playing a clip made here (scikit-image's astronaut moving across a
640x480 frame). The camera starts, the face's box and labels appear, the frame rate shown is above a
floor, and a photo picked in the page is analyzed. Skipped without /usr/bin/chromium and
/usr/bin/chromedriver, except under CI (CI=true), where .ci/run installs them and their absence fails.

SERVE_PAGE_PNG=results/serve_page.png saves the live page's screenshot there (the README's picture).
"""
import os
import re
import time

import cv2
import numpy as np
import pytest
import skimage.data

import test_serve
from conftest import ROOT, running_in_ci

# test_serve.py's fixtures, instantiated here once more: the model, the pictures, a server on loopback
analyzer, files, port = test_serve.analyzer, test_serve.files, test_serve.port

pytestmark = pytest.mark.slow  # the shipped model is restored
CHROMIUM, CHROMEDRIVER = '/usr/bin/chromium', '/usr/bin/chromedriver'
FPS_FLOOR = 4  # frames/s answered, on a busy machine; a quiet one shows ~15 (docs/speed.md)
WAIT = 60  # seconds for the page to show what it should


def require_browser():
    """Skip (fail under CI) unless Chromium, its driver and Selenium are installed."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(path)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append('selenium (pip install -r requirements.txt)')
    if not missing:
        return
    reason = 'the browser test needs %s (apt-get install chromium chromium-driver; .ci/run does)' % ', '.join(missing)
    if running_in_ci(os.environ):
        pytest.fail('CI is set, so the browser test must run: ' + reason, pytrace=False)
    pytest.skip(reason)


def write_clip(path, frames=30):
    """A .y4m clip (what Chromium's fake camera plays, looping) of a 640x480 window panning left and right over
    the astronaut photo enlarged to 800x600: her face moves 160 px across the frame and back."""
    photo = cv2.resize(skimage.data.astronaut()[:384, :, ::-1], (800, 600))
    with open(path, 'wb') as f:
        f.write(b'YUV4MPEG2 W640 H480 F30:1 Ip A1:1 C420jpeg\n')
        for i in range(frames):
            x = int(80 + 80 * np.sin(2 * np.pi * i / frames))
            frame = np.ascontiguousarray(photo[60:540, x:x + 640])
            f.write(b'FRAME\n' + cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes())


@pytest.fixture(scope='module')
def browser(tmp_path_factory):
    require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    clip = str(tmp_path_factory.mktemp('camera') / 'clip.y4m')
    write_clip(clip)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ('--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
                 '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage',
                 '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
                 '--use-file-for-fake-video-capture=' + clip, '--window-size=900,900'):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(WAIT)
    yield driver
    driver.quit()


def wait_for(driver, condition, what):
    deadline = time.time() + WAIT
    while time.time() < deadline:
        value = driver.execute_script(condition)
        if value:
            return value
        time.sleep(0.2)
    status = driver.execute_script("return document.getElementById('status').textContent")
    raise AssertionError('%s not seen in %d s (status line: %r)' % (what, WAIT, status))


def face_lines(driver):
    return driver.execute_script("return [...document.querySelectorAll('#faces li')].map(li => li.textContent)")


def test_the_camera_shows_each_face_with_its_labels_live(browser, port):
    browser.get('http://127.0.0.1:%d/' % port)
    browser.find_element('id', 'camera').click()
    wait_for(browser, "return document.querySelector('#faces li') && document.getElementById('status').dataset.fps",
             'a face and a frame rate')
    time.sleep(3)  # the rate settles over its two-second window
    lines = face_lines(browser)
    assert len(lines) == 1, lines
    # 'face 1 (track 1): smile 0.98, happy 0.87, female 0.61': each task's top class and its probability
    assert re.fullmatch(r'face 1 \(track \d+\): (non_)?smile [01]\.\d\d, '
                        r'(angry|disgust|fear|happy|sad|surprise|neutral) [01]\.\d\d, (fe)?male [01]\.\d\d', lines[0])
    fps = float(browser.execute_script("return document.getElementById('status').dataset.fps"))
    assert fps >= FPS_FLOOR, browser.find_element('id', 'status').text
    # the box is drawn on the canvas: green (0, 200, 0) pixels, which the astronaut photo has none of
    pixels = np.array(browser.execute_script(
        "const c = document.getElementById('view'); return Array.from(c.getContext('2d')"
        ".getImageData(0, 0, c.width, c.height).data)"), np.uint8).reshape(480, 640, 4)
    green = (pixels[..., 0] < 40) & (pixels[..., 1] > 180) & (pixels[..., 2] < 40)
    assert green.sum() > 500
    if os.environ.get('SERVE_PAGE_PNG'):
        browser.save_screenshot(os.path.join(ROOT, os.environ['SERVE_PAGE_PNG']))
    browser.find_element('id', 'camera').click()  # stop
    assert browser.find_element('id', 'camera').text == 'Start camera'


def test_a_photo_picked_in_the_page_is_analyzed(browser, port, files):
    browser.get('http://127.0.0.1:%d/' % port)
    browser.find_element('id', 'photo').send_keys(files['three.png'])
    wait_for(browser, "return document.getElementById('status').textContent.startsWith('three.png: ')",
             'the answer for three.png')
    assert browser.find_element('id', 'status').text.startswith('three.png: 3 face(s), round trip ')
    lines = face_lines(browser)
    assert [line.split(':')[0] for line in lines] == ['face 1', 'face 2', 'face 3']


def test_the_api_docs_render_offline(browser, port):
    """/docs: Swagger UI from the server's own files (this machine reaches no CDN), one block per endpoint."""
    browser.get('http://127.0.0.1:%d/docs' % port)
    paths = wait_for(browser, "const blocks = document.querySelectorAll('.opblock-summary-path');"
                              "return blocks.length >= 4 && [...blocks].map(b => b.textContent)", 'the endpoints')
    assert sorted(paths) == ['/', '/analyze', '/health', '/info']
