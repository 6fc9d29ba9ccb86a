"""The example frames of shared/KRAKEN_PROTOCOL.md, verbatim where the sheet gives
them whole. The client's decoder and the replay server are both held to these.

Where the sheet elides values (``…``), the frame here fills them with plausible
numbers and says so.
"""

from __future__ import annotations

# --- Futures v1 --------------------------------------------------------------
FUTURES_INFO = '{"event":"info","version":1}'
FUTURES_SUBSCRIBE_TICKER = '{"event":"subscribe","feed":"ticker","product_ids":["PI_XBTUSD"]}'
FUTURES_SUBSCRIBED_TICKER = '{"event":"subscribed","feed":"ticker","product_ids":["PI_XBTUSD"]}'
FUTURES_ERROR_INVALID_PRODUCT = '{"event":"error","message":"Invalid product id"}'
FUTURES_ERROR_INVALID_FEED = '{"event":"error","message":"Invalid feed"}'
FUTURES_ERROR_JSON = '{"event":"error","message":"Json Error"}'
FUTURES_ALERT_INVALID_PRODUCT = (
    '{"event":"alert","message":"Couldn\'t subscribe to invalid product `PF_NOTAREALTHING`"}'
)
FUTURES_SUBSCRIBE_HEARTBEAT = '{"event":"subscribe","feed":"heartbeat"}'
FUTURES_SUBSCRIBED_HEARTBEAT = '{"event":"subscribed","feed":"heartbeat"}'
FUTURES_HEARTBEAT = '{"feed":"heartbeat","time":1700000000000}'
FUTURES_TICKER = (
    '{"time":1786046338005,"product_id":"PF_XBTUSD","funding_rate":0.1767923925826881,'
    '"funding_rate_prediction":-0.045351956680625,"relative_funding_rate":2.747066666667e-6,'
    '"relative_funding_rate_prediction":-7.043125e-7,"next_funding_rate_time":1786046400000,'
    '"leverage":"100x","premium":0.0,"feed":"ticker","bid":64401.0,"ask":64402.0,'
    '"bid_size":0.1239,"ask_size":0.1179,"volume":3669.9134,"dtm":0,"index":64401.07,'
    '"last":64403.0,"change":-0.68,"suspended":false,"tag":"perpetual","pair":"XBT:USD",'
    '"openInterest":2157.6281,"markPrice":64399.68035588646,"maturityTime":0,'
    '"post_only":false,"volumeQuote":236982977.0066,"open":64843.0,"high":64976.0,"low":64104.0}'
)
FUTURES_TRADE = (
    '{"product_id":"PF_XBTUSD","feed":"trade","uid":"…","side":"sell","type":"fill",'
    '"time":1786046338116,"qty":0.0046,"price":64401.0,"seq":45847}'
)
# The sheet shows the snapshot's shape with its trades elided; these two are filled in,
# newest first as Kraken lists them.
FUTURES_TRADE_SNAPSHOT = (
    '{"feed":"trade_snapshot","product_id":"PI_XBTUSD","trades":['
    '{"feed":"trade","product_id":"PI_XBTUSD","uid":"b","side":"buy","type":"fill",'
    '"seq":101,"time":1786046337000,"qty":10.0,"price":64400.5},'
    '{"feed":"trade","product_id":"PI_XBTUSD","uid":"a","side":"sell","type":"fill",'
    '"seq":100,"time":1786046336000,"qty":25.0,"price":64399.0}]}'
)
FUTURES_BOOK = (
    '{"feed":"book","product_id":"PF_XBTUSD","side":"sell","seq":16733631,'
    '"price":64416.0,"qty":0.0568,"timestamp":1786046338200}'
)

# --- Spot v2 -----------------------------------------------------------------
SPOT_STATUS = (
    '{"channel":"status","type":"update","data":[{"api_version":"v2",'
    '"connection_id":15564437896659189083,"system":"online","version":"2.0.7"}]}'
)
SPOT_SUBSCRIBE_TRADE = (
    '{"method":"subscribe","params":{"channel":"trade","symbol":["BTC/USD"],"snapshot":true},'
    '"req_id":1}'
)
SPOT_SUBSCRIBED_TRADE = (
    '{"method":"subscribe","result":{"channel":"trade","snapshot":true,"symbol":"BTC/USD"},'
    '"success":true,"time_in":"2024-07-27T21:15:57.923475Z",'
    '"time_out":"2024-07-27T21:15:57.923520Z","req_id":1}'
)
SPOT_TRADE = (
    '{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD","side":"buy",'
    '"price":68580.0,"qty":0.14225864,"ord_type":"limit","trade_id":72166031,'
    '"timestamp":"2024-07-27T21:16:00.512060Z"}]}'
)
SPOT_SUBSCRIBE_TICKER = (
    '{"method":"subscribe","params":{"channel":"ticker","symbol":["BTC/USD"],'
    '"event_trigger":"bbo","snapshot":true},"req_id":2}'
)
# The sheet elides the ticker's numbers; these are filled in, with the exponent-notation
# quantity the sheet warns about.
SPOT_TICKER = (
    '{"channel":"ticker","type":"snapshot","data":[{"symbol":"BTC/USD","bid":68580.0,'
    '"bid_qty":5.494e-6,"ask":68580.1,"ask_qty":1.2,"last":68580.0,"volume":1520.3,'
    '"vwap":68321.7,"low":67800.0,"high":68900.0,"change":250.1,"change_pct":0.37}]}'
)
SPOT_HEARTBEAT = '{"channel":"heartbeat"}'
SPOT_PING = '{"method":"ping","req_id":101}'
SPOT_PONG = (
    '{"method":"pong","req_id":101,"time_in":"2024-07-27T21:15:57.923475Z",'
    '"time_out":"2024-07-27T21:15:57.923520Z"}'
)
SPOT_ERROR_PAIR = (
    '{"error":"Currency pair not supported BTC/XYZ","method":"subscribe","success":false,'
    '"req_id":1,"time_in":"2024-07-27T21:15:57.923475Z","time_out":"2024-07-27T21:15:57.923520Z"}'
)
SPOT_ERROR_CHANNEL = (
    '{"error":"Subscription name invalid","method":"subscribe","success":false,"req_id":2}'
)
SPOT_RATE_LIMIT = '{"Error":"Exceeded msg rate"}'
