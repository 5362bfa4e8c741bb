"""Agora's documented and observed answer bodies, copied as data from the reference
(shared/reference/agora-cloud-recording-api.md section 9; sources named there)."""

from __future__ import annotations

from typing import Any

# 1. Query, individual/mix with fileListMode "json" (Agora query documentation).
QUERY_JSON: dict[str, Any] = {
    "resourceId": "JyvK8nXHuV1BE64GDkAaBGEscvtHW7v8BrQoRPCHxmeVxwY22-x-kv4GdPcjZeMzoCBUCOr9q-k6wBWMC7SaAkZ_4nO3",
    "serverResponse": {
        "fileListMode": "json",
        "fileList": [
            {
                "fileName": "xxx.m3u8",
                "trackType": "audio_and_video",
                "uid": "123",
                "mixedAllUser": True,
                "isPlayable": True,
                "sliceStartTime": 1562724971626,
            },
            {
                "fileName": "xxx.m3u8",
                "trackType": "audio_and_video",
                "uid": "456",
                "mixedAllUser": True,
                "isPlayable": True,
                "sliceStartTime": 1562724971626,
            },
        ],
        "status": 5,
        "sliceStartTime": 1562724971626,
    },
}

# 2. Query, mix with HLS only: fileListMode "string".
QUERY_STRING: dict[str, Any] = {
    "resourceId": "xxxx",
    "sid": "yyy",
    "serverResponse": {
        "status": 5,
        "fileList": "zzzz.m3u8",
        "fileListMode": "string",
        "sliceStartTime": 1606357122528,
    },
}

# 3. Query, web recording (current documentation).
QUERY_WEB: dict[str, Any] = {
    "cname": "httpClient463224",
    "uid": "527841",
    "resourceId": "JyvK8nXHuV1BE.....",
    "sid": "38f8e3c.....",
    "serverResponse": {
        "status": 0,
        "extensionServiceState": [
            {
                "payload": {
                    "fileList": [{"filename": "xxx.m3u8", "sliceStartTime": 0}],
                    "onhold": True,
                    "state": "inProgress",
                },
                "serviceName": "web_recorder_service",
            }
        ],
    },
}

# 3b. Query, web recording with CDN push (older documentation).
QUERY_WEB_RTMP: dict[str, Any] = {
    "resourceId": "JyvK8n",
    "serverResponse": {
        "extensionServiceState": [
            {
                "payload": {"fileList": [], "onhold": False, "state": "inProgress"},
                "serviceName": "web_recorder_service",
            },
            {
                "payload": {"outputs": [{"rtmpUrl": "rtmp://xxx", "status": "publishing"}]},
                "serviceName": "rtmp_publish_service",
            },
        ],
        "status": 4,
    },
}

# Individual mode with screenshots: status only.
QUERY_SNAPSHOT: dict[str, Any] = {"resourceId": "r", "sid": "s", "serverResponse": {"status": 5, "sliceStartTime": 1}}

# 4. Stop, web (current documentation) and individual/mix (older documentation).
STOP_WEB: dict[str, Any] = {
    "resourceId": "JyvK8nXHuV1BE.....",
    "sid": "38f8e3cfdc474cd56fc1ceba380d7e1a",
    "serverResponse": {
        "extensionServiceState": [{"payload": {"uploadingStatus": "uploaded"}, "serviceName": "upload_service"}]
    },
    "cname": "httpClient463224",
    "uid": "527841",
}
STOP_JSON: dict[str, Any] = {
    "resourceId": "JyvK8n",
    "sid": "38f8e3cfdc474cd56fc1ceba380d7e1a",
    "serverResponse": {
        "fileListMode": "json",
        "fileList": QUERY_JSON["serverResponse"]["fileList"],
        "uploadingStatus": "uploaded",
    },
}
# 5. Stop, mix HLS only.
STOP_STRING: dict[str, Any] = {
    "resourceId": "xxxx",
    "sid": "yyy",
    "serverResponse": {"fileListMode": "string", "fileList": "zzzz.m3u8", "uploadingStatus": "uploaded"},
}
# 6. Real 404 on stop (AgoraIO/API-Examples#373).
NOT_FOUND_REAL: dict[str, Any] = {
    "cname": "64ce638a934f",
    "code": 404,
    "resourceId": "s1pH1NB-7Cjy_hmfRaLzcG74ha3F3rG7L0RviD9tSQxEz6ekbROut",
    "serverResponse": {
        "command": "StopCloudRecorder",
        "payload": {"message": "failed to find worker"},
        "subscribeModeBitmask": 1,
        "vid": "1209",
    },
    "sid": "746d1de45d2780add6f055",
    "uid": "18761",
}
# 7. Real stop error code 49, which still carries the file name as fileListStr.
STOP_CODE_49: dict[str, Any] = {
    "cname": "123456",
    "uid": "10002",
    "resourceId": "VIFvR6qvdFkRNRDsj9uhhEgnjLZrTmUD8olvImTJYa2AG3nJ3sFuW56NIVBSlorjqUXA8NREU7o",
    "sid": "2354cf898b41b76d70850ba58b9b9ffb",
    "code": 49,
    "serverResponse": {
        "backuped": 0,
        "fileListMode": "string",
        "fileListStr": "quickstart/2354cf898b41b76d70850ba58b9b9ffb_123456.m3u8",
        "payload": {"message": "Failed"},
    },
}
# 8. Real stop 200 with an empty list, files sent to Agora's backup.
STOP_BACKUPED: dict[str, Any] = {
    "cname": "925",
    "serverResponse": {"fileList": [], "fileListMode": "json", "uploadingStatus": "backuped"},
    "sid": "667218b0c9458dce1a7eea911853e5a0",
    "uid": "29111000",
}
SERVICE_NOT_FOUND = {"code": 404, "reason": "failed to find worker"}
GATEWAY_NO_ROUTE = {"message": "no Route matched with those values"}
RATE_LIMITED = {"message": "API rate limit exceeded"}
BAD_CREDENTIALS = {"message": "Invalid authentication credentials"}
