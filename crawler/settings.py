"""Scrapy settings of the PubMed crawl; every one can be overridden with ``-s KEY=VALUE``.

The rate limiter (crawler.ratelimit), not Scrapy's delays or AutoThrottle, sets the
pace: Scrapy may keep enough requests in flight to fill every slot the limiter grants.
The NCBI API key is read from the ``NCBI_API_KEY`` environment variable only.
"""

from eutils import policy

BOT_NAME = "pubmed"
SPIDER_MODULES = ["crawler.spiders"]
NEWSPIDER_MODULE = "crawler.spiders"
COMMANDS_MODULE = "crawler.commands"

# E-utilities endpoint and identification (NCBI asks for tool and email).
PUBMED_EUTILS_URL = policy.EUTILS_URL
PUBMED_TOOL = policy.TOOL
NCBI_EMAIL = policy.email_from_env()

# Output store (a folder; see store/): [store] path of ./pipeline.toml, else data/pubmed.
PUBMED_STORE = str(__import__("store.config", fromlist=["configured_store_path"]).configured_store_path())

# Requests per second for the whole crawl: NCBI allows 3, or 10 with an API key.
PUBMED_RATE = policy.default_rate(policy.api_key_from_env())
# Seconds of arrival jitter (network, server) tolerated, besides the measured send delays.
PUBMED_RATE_MARGIN = policy.ARRIVAL_JITTER_S
PUBMED_RATE_MARGIN_MAX = 0.25  # the measured margin never grows past this (the crawl then runs at 1/1.25 the rate)
PUBMED_RETRY_AFTER_MAX = policy.RETRY_AFTER_MAX_S  # seconds a Retry-After (or X-RateLimit wish) is capped at
PUBMED_RATE_COLD_ALLOWANCE = 0.1  # seconds a request after a quiet spell (new connection) may arrive late
PUBMED_RATE_LIMITER = "crawler.ratelimit.LocalRateLimiter"

# Distributed crawl: set PUBMED_REDIS_URL (e.g. redis://host:6379/0) and the add-on
# crawler.distributed.DistributedCrawl makes every process given the same input share one
# request queue and one rate limit in Redis (it is not configured while the URL is empty).
ADDONS = {"crawler.distributed.DistributedCrawl": 100}
PUBMED_REDIS_URL = ""
PUBMED_REDIS_JOB = ""  # job id; default: a hash of the crawl's input
PUBMED_REDIS_LEASE_SECONDS = 30.0  # a dead worker's requests return to the queue after this long
PUBMED_REDIS_RATE_KEY = ""  # Redis key of the shared rate limit; default: per E-utilities host and API key
PUBMED_REDIS_COLD_ALLOWANCE = 0.2  # seconds a process's first request (new connection) may arrive late
# Seconds added to the shared 1-second window against grant-to-arrival jitter.
PUBMED_REDIS_RATE_MARGIN = policy.ARRIVAL_JITTER_S

# efetch batching and re-requests of PMIDs an answer lacked.
PUBMED_BATCH_SIZE = policy.BATCH_SIZE
PUBMED_FETCH_ROUNDS = 3  # the first request plus re-requests in halved batches
PUBMED_MAX_PMID = 99_999_999  # upper end of the PMID range that large queries are split over
PUBMED_ESEARCH_MAX_SPLITS = 20_000  # a query needing more PMID-range splits fails with a clear error
PUBMED_CUT_LAZILY = True  # cut start batches as the downloader has room (off when the start batches are re-cut)

# Writing to the store.
PUBMED_PART_ROWS = 10_000
PUBMED_FLUSH_ITEMS = 2_000
PUBMED_FLUSH_SECONDS = 5.0

# Progress and summary.
PUBMED_PROGRESS_INTERVAL = 10.0  # seconds between progress log lines
PUBMED_MISSING_SHOWN = 20  # PMIDs listed per kind in the summary line; all go to crawl-missing.txt / crawl-failed.txt
# Scrapy's stats dump (30 lines) only with `scrapy crawl --stats` or -s LOG_LEVEL=DEBUG (crawler/commands/crawl.py).
STATS_DUMP = False

# Retries: bounded attempts with the policy's jittered exponential backoff (eutils.policy).
RETRY_ENABLED = True
RETRY_TIMES = 5
RETRY_HTTP_CODES = list(policy.RETRY_STATUSES)
PUBMED_RETRY_BACKOFF = policy.BACKOFF_BASE_S
PUBMED_RETRY_BACKOFF_MAX = policy.BACKOFF_MAX_S
DOWNLOAD_TIMEOUT = 60
# A 200-PMID efetch answer is about 1 MB: anything past 32 MiB (compressed or unpacked) is a failed request.
DOWNLOAD_MAXSIZE = policy.MAX_BODY_BYTES
DOWNLOAD_WARNSIZE = 8 * 1024 * 1024

# The limiter sets the pace: no Scrapy delays, no AutoThrottle, no randomized delay.
DOWNLOAD_DELAY = 0
DOWNLOAD_DELAY_JITTER = 0  # Scrapy >= 2.19 spelling of RANDOMIZE_DOWNLOAD_DELAY = False (which halves gaps)
AUTOTHROTTLE_ENABLED = False
CONCURRENT_REQUESTS = 16
CONCURRENT_REQUESTS_PER_DOMAIN = 16
ROBOTSTXT_OBEY = False
COOKIES_ENABLED = False
TELNETCONSOLE_ENABLED = False
REMOTE_CONTROL_ENABLED = False
USER_AGENT = "pubmed-pipeline (Scrapy; E-utilities client)"

# Components a PubMed crawl never uses are switched off with None, so Scrapy does not even
# import them (cookies pull in tldextract, remote control aiohttp: start-up time).
DOWNLOADER_MIDDLEWARES = {
    "scrapy.downloadermiddlewares.retry.RetryMiddleware": None,
    "scrapy.downloadermiddlewares.cookies.CookiesMiddleware": None,
    "scrapy.downloadermiddlewares.redirect.MetaRefreshMiddleware": None,
    # E-utilities never redirect: a 3xx is a failed request (its Location logged), so no form body (and no
    # API key) is ever sent anywhere else.
    "scrapy.downloadermiddlewares.redirect.RedirectMiddleware": None,
    "scrapy.downloadermiddlewares.offsite.OffsiteMiddleware": None,
    "scrapy.downloadermiddlewares.httpauth.HttpAuthMiddleware": None,
    "crawler.middlewares.EutilsRetryMiddleware": 550,
    "crawler.ratelimit.RateLimitMiddleware": 950,
}
SPIDER_MIDDLEWARES = {
    "crawler.middlewares.ParseErrorRetryMiddleware": 100,
}
ITEM_PIPELINES = {
    "crawler.pipelines.StorePipeline": 300,
}
EXTENSIONS = {
    "crawler.progress.CrawlProgress": 500,
    "scrapy.extensions.telnet.TelnetConsole": None,
    "scrapy.extensions.remote_control.RemoteControl": None,
}

LOG_LEVEL = "INFO"
