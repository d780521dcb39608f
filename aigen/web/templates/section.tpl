% from aigen.web.views import short_text as short
% status = g['status']
<section class="generation status-{{status.lower()}}" id="g-{{g['id']}}" data-id="{{g['id']}}" data-status="{{status}}" data-full="{{1 if full else 0}}">
  <header class="gen-head">
    % if full:
    <h1 class="prompt">{{g['prompt']}}</h1>
    % else:
    <h2 class="prompt"><a href="/g/{{g['id']}}">{{g['prompt']}}</a></h2>
    % end
    <p class="meta">
      <span class="badge badge-{{status.lower()}}">{{status}}</span>
      <span>Requested <time datetime="{{g['created_at'] or ''}}">{{t(g['created_at'])}}</time></span>
      % if g['generated_at']:
      <span>Finished <time datetime="{{g['generated_at']}}">{{t(g['generated_at'])}}</time> ({{took(g['created_at'], g['generated_at'])}})</span>
      % end
      <span class="gid"><code>{{g['id']}}</code></span>
    </p>
  </header>
  % if status == 'Processing':
  <div class="processing" role="status" aria-live="polite">
    <p class="message">{{g['message']}}</p>
    <p class="progress-line"><progress max="{{g['total']}}" value="{{g['done']}}"></progress>
      <span class="progress-text">{{g['done']}} of {{g['total']}}</span> ready</p>
    % if g['running'] is False:
    <p class="hint">No aigen process is working on it right now (its run was stopped).
      Resume it with <code>{{g['retry_command']}}</code>.</p>
    % end
  </div>
  % else:
  %   if status == 'Failed':
  <div class="failure">
    <p><strong>{{g['done']}} of {{g['total']}} made; {{len(g['failed'])}} failed.</strong></p>
    <ul class="errors">
      % for a in g['failed']:
      <li>{{a['kind'].capitalize()}} {{a['index']}}: {{a['error'] or 'no reason recorded'}}</li>
      % end
    </ul>
    %     if g['all_refused']:
    <p>The provider refused every missing one: the same prompt is refused again (and may be charged again).
      Change the prompt with a new generation, or submit them again anyway with
      <code class="retry">{{g['retry_command']}}</code></p>
    %     else:
    <p>Make only the missing ones (what was made is kept) with <code class="retry">{{g['retry_command']}}</code></p>
    %     end
  </div>
  %   end
  %   if g['videos']:
  <h{{2 if full else 3}} class="kind-title">Videos</h{{2 if full else 3}}>
  <div class="videos">
    % for a in g['videos']:
    <figure class="video">
      <a class="tile" href="{{a['url']}}" data-video="{{a['url']}}" data-label="Video {{a['index']}}: {{short(g['prompt'], 100)}}"><img src="{{a['thumb_url']}}" srcset="{{a['thumb_url']}} 1x, {{a['thumb2x_url']}} 2x"
           alt="Video {{a['index']}}: {{short(g['prompt'], 100)}}" loading="{{'eager' if eager else 'lazy'}}" decoding="async"
      % if a['width'] and a['height']:
           width="{{a['width']}}" height="{{a['height']}}"
      % end
           ><span class="play" aria-hidden="true"></span></a>
      <figcaption><span>Video {{a['index']}}{{(' · %.1f s' % a['duration']) if a['duration'] else ''}}</span>
        <a href="{{a['download_url']}}" download>Download<span class="vh"> video {{a['index']}} ({{a['format']}}, {{size(a['bytes'])}})</span></a></figcaption>
    </figure>
    % end
  </div>
  %   end
  %   if g['images']:
  <h{{2 if full else 3}} class="kind-title">Images</h{{2 if full else 3}}>
  <div class="images">
    % for a in g['images']:
    <figure class="image">
      <a class="tile" href="{{a['url']}}" title="Open full size"><img src="{{a['thumb_url']}}" srcset="{{a['thumb_url']}} 1x, {{a['thumb2x_url']}} 2x"
           alt="Image {{a['index']}}: {{short(g['prompt'], 100)}}" loading="{{'eager' if eager else 'lazy'}}" decoding="async"
      % if a['width'] and a['height']:
           width="{{a['width']}}" height="{{a['height']}}"
      % end
           ></a>
      <figcaption><span>Image {{a['index']}}</span>
        <a href="{{a['download_url']}}" download>Download<span class="vh"> image {{a['index']}} ({{a['format']}}, {{size(a['bytes'])}})</span></a></figcaption>
    </figure>
    % end
  </div>
  %   end
  %   if not g['videos'] and not g['images'] and status == 'Completed':
  <p class="hint">This generation has no files.</p>
  %   end
  % end
</section>
