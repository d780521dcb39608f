% rebase('base', title=title)
<section class="ask-card">
  <h1>Make again</h1>
  % if message:
  <p class="error" role="alert">{{message}}</p>
  %   if hint:
  <p class="help">{{hint}}</p>
  %   end
  % elif limit_message:
  <p class="error" role="status">{{limit_message}}</p>
  % end
  <p>A new generation with the same prompt and options as <a href="/g/{{gen['id']}}"><code>{{gen['id']}}</code></a>
    (a new seed, so new pictures):</p>
  <blockquote class="prompt-quote">{{fields['prompt']}}</blockquote>
  <dl class="facts">
    % if int(fields['images']):
    <dt>Images</dt><dd>{{fields['images']}} by {{fields['image_provider']}}{{(' / ' + extra['image_model']) if extra['image_model'] else ''}}, {{fields['image_size']}}</dd>
    % end
    % if int(fields['videos']):
    <dt>Videos</dt><dd>{{fields['videos']}} by {{fields['video_provider']}}{{(' / ' + extra['video_model']) if extra['video_model'] else ''}}, {{fields['video_size']}}, {{'%g' % extra['duration']}} s at {{extra['fps']}} fps</dd>
    % end
    <dt>Notification</dt><dd>{{fields['notify_via'] or 'default'}}, when ready</dd>
  </dl>
  <form method="post" action="/g/{{gen['id']}}/again" class="confirm-form">
    <input type="hidden" name="csrf_token" value="{{csrf}}">
    <button type="submit" class="primary">Make it again</button>
    <a href="/g/{{gen['id']}}">Cancel</a>
  </form>
  <p class="help">The same from a shell on the server:</p>
  <pre tabindex="0"><code>{{command}}</code></pre>
</section>
