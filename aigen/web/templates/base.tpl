<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="same-origin">
<title>{{title}} · aigen</title>
<link rel="stylesheet" href="/static/style.css">
<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">
% if poll:
<noscript><meta http-equiv="refresh" content="{{max(1, poll_ms // 1000)}}"></noscript>
% end
<script src="/static/gallery.js" defer></script>
<script src="/static/viewer.js" defer></script>
<script src="/static/actions.js" defer></script>
<script src="/static/tiles.js" defer></script>
</head>
<body data-poll-ms="{{poll_ms}}" data-idle-poll-ms="{{get('idle_poll_ms', 20000)}}">
<header class="topbar">
  <a class="brand" href="/"><span class="logo" aria-hidden="true"></span>aigen</a>
  % if user:
  <div class="account">
    <span class="who">Logged in as <strong>{{user}}</strong></span>
    <form method="post" action="/logout" class="logout">
      <input type="hidden" name="csrf_token" value="{{csrf}}">
      <button type="submit" class="link-button">Log out</button>
    </form>
  </div>
  % end
</header>
<main>
{{!base}}
</main>
<footer class="foot">aigen gallery · made on this machine, served from its own database</footer>
</body>
</html>
